"""ONNX operators (default domain) on NumPy arrays and fastcnn kernels: the
registry (_registry) filled by the operator modules, imported here."""
from fastcnn.onnx import (_ops_index, _ops_layers, _ops_math, _ops_pool,  # noqa: F401
                          _ops_resize, _ops_tensor)                     # (they register)
from fastcnn.onnx._ops_layers import silu
from fastcnn.onnx._registry import OPS, SUPPORTED_MIN_OPSET

__all__ = ["OPS", "SUPPORTED_MIN_OPSET", "silu"]
