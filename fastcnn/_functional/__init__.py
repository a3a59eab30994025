"""Implementations behind fastcnn.functional, one module per op family."""
