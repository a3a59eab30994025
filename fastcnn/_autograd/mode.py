"""Whether gradients are recorded: fastcnn.no_grad, enable_grad,
set_grad_enabled and is_grad_enabled, as PyTorch's (per thread, on by
default). Modules record their forward for backward() only in training mode
with gradients enabled."""
import functools
import threading

__all__ = ["no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled"]


class _Mode(threading.local):
    enabled = True


_mode = _Mode()


def is_grad_enabled():
    """True when a training-mode module call records its forward for backward()."""
    return _mode.enabled


class _Switch:
    """Recording set to `mode` inside a with block or a decorated function."""
    mode = True

    def __enter__(self):
        self.prev = _mode.enabled
        _mode.enabled = self.mode
        return self

    def __exit__(self, *exc):
        _mode.enabled = self.prev
        return False

    def __call__(self, fn):
        mode = self.mode

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with set_grad_enabled(mode):
                return fn(*args, **kwargs)
        return wrapper


class set_grad_enabled(_Switch):
    """Turn recording on or off: as a function call, a context manager (the
    previous setting comes back on exit) or a decorator."""

    def __init__(self, mode):
        if not isinstance(mode, bool):
            raise TypeError(f"set_grad_enabled: mode must be a bool, got {type(mode).__name__}")
        self.prev = _mode.enabled
        self.mode = mode
        _mode.enabled = mode

    def __enter__(self):
        return self                        # the call itself switched

    def __call__(self, fn):
        _mode.enabled = self.prev          # as a decorator: only while fn runs
        return super().__call__(fn)


class no_grad(_Switch):
    """Context manager and decorator: no recording inside (inference in
    training mode, frozen parts of a model)."""
    mode = False


class enable_grad(_Switch):
    """Context manager and decorator: recording back on inside a no_grad block."""
    mode = True
