"""ONNX import: run CNN models exported from PyTorch and other frameworks on
fastcnn, with NumPy and no other runtime.

    model = fastcnn.onnx.load("resnet18.onnx")
    logits, = model.run(None, {"input": x})      # ONNX Runtime's convention
    logits = model(x)
    fastcnn.onnx.export(fastcnn_model, (1, 3, 224, 224), "model.onnx")

Needs the onnx package: pip install "fastcnn[onnx]".
"""
from fastcnn.onnx._model import load, OnnxModel, UnsupportedOperatorError
from fastcnn.onnx._ops import OPS
from fastcnn.onnx._export import export

SUPPORTED_OPERATORS = sorted(OPS)

__all__ = ["load", "export", "OnnxModel", "UnsupportedOperatorError", "SUPPORTED_OPERATORS"]
