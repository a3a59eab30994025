"""Optional rivals run side by side: PyTorch (and ONNX Runtime where relevant).
Missing ones are reported, never an error."""
import importlib


def available(names):
    """(present, missing) lists for the requested rival names."""
    present, missing = [], []
    for name in names:
        module = {"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino"}.get(name)
        if module is None:
            raise ValueError(f"unknown rival {name!r}; choose from torch, onnxruntime, openvino")
        try:
            importlib.import_module(module)
            present.append(name)
        except Exception:
            missing.append(name)
    return present, missing


class TorchThreads:
    """Set PyTorch's intra-op threads for a block and restore them."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        import torch
        self.previous = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        import torch
        torch.set_num_threads(self.previous)
