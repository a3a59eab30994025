"""Private compiled kernels. Users import fastcnn, fastcnn.functional, fastcnn.nn."""
