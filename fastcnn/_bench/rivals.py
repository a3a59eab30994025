"""Optional rivals run side by side: PyTorch, ONNX Runtime and OpenVINO.
Missing ones are reported, never an error."""
import contextlib
import importlib


KNOWN = ("torch", "onnxruntime", "openvino")


def available(names):
    """(present, missing) lists for the requested rival names; a rival that
    fails to import for any reason counts as missing."""
    present, missing = [], []
    for name in names:
        if name not in KNOWN:
            raise ValueError(f"unknown rival {name!r}; choose from {', '.join(KNOWN)}")
        try:
            importlib.import_module(name)
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


@contextlib.contextmanager
def same_threads(n, rivals):
    """fastcnn, and PyTorch when it is among the rivals, on n threads for a
    block (ONNX Runtime and OpenVINO take fastcnn's count when made)."""
    import fastcnn
    with fastcnn.threads(n), (TorchThreads(n) if "torch" in rivals
                              else contextlib.nullcontext()):
        yield
