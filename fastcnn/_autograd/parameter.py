"""Parameter: a learnable array that keeps its identity and carries .grad."""
import numpy as np

__all__ = ["Parameter"]


def _plain(obj):
    if isinstance(obj, Parameter):
        return obj.view(np.ndarray)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(o) for o in obj)
    return obj


def _foreign(objs):
    """An array subclass other than Parameter among objs (the graph tracer's
    arrays): its own override must see the Parameter itself."""
    for o in objs:
        if isinstance(o, (list, tuple)):
            if _foreign(o):
                return True
        elif isinstance(o, np.ndarray) and type(o) is not np.ndarray and \
                not isinstance(o, Parameter):
            return True
    return False


class Parameter(np.ndarray):
    """A module's learnable array (torch.nn.Parameter's role).

    Parameter(data) shares data's memory. Modules keep the same Parameter
    object for their lifetime (load_state_dict and optimizers write into it);
    `grad` holds its gradient after a backward (None until then, accumulated
    by later backward calls, reset by zero_grad()), and `requires_grad`
    says whether backward computes it. Arithmetic and NumPy functions on a
    Parameter give plain arrays, as do its views.
    """

    def __new__(cls, data=None, requires_grad=True):
        if data is None:
            data = np.empty(0, np.float32)
        p = np.asarray(data).view(cls)
        p.requires_grad = bool(requires_grad)
        return p

    def __array_finalize__(self, obj):
        self.grad = None
        self.requires_grad = True

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        if _foreign(inputs) or (out is not None and _foreign(out)):
            return NotImplemented
        if out is not None:
            kwargs["out"] = _plain(out)
        return getattr(ufunc, method)(*_plain(inputs), **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        if _foreign(args) or _foreign(kwargs.values()):
            return NotImplemented
        return func(*_plain(args), **{k: _plain(v) for k, v in kwargs.items()})

    # views and copies are plain arrays
    def __getitem__(self, key):
        return self.view(np.ndarray)[key]

    def reshape(self, *args, **kwargs):
        return self.view(np.ndarray).reshape(*args, **kwargs)

    def transpose(self, *axes):
        return self.view(np.ndarray).transpose(*axes)

    @property
    def T(self):
        return self.view(np.ndarray).T

    def ravel(self, order="C"):
        return self.view(np.ndarray).ravel(order)

    def flatten(self, order="C"):
        return self.view(np.ndarray).flatten(order)

    def squeeze(self, axis=None):
        return self.view(np.ndarray).squeeze(axis)

    def copy(self, order="C"):
        return self.view(np.ndarray).copy(order)

    def astype(self, dtype, *args, **kwargs):
        return self.view(np.ndarray).astype(dtype, *args, **kwargs)

    def view(self, *args, **kwargs):
        if not args and not kwargs:
            return np.ndarray.view(self, np.ndarray)
        return np.ndarray.view(self, *args, **kwargs)

    @property
    def data(self):
        """The parameter's values as a plain array (its memory)."""
        return self.view(np.ndarray)

    def detach(self):
        return self.view(np.ndarray)

    def requires_grad_(self, requires_grad=True):
        self.requires_grad = bool(requires_grad)
        return self

    def __reduce__(self):
        return (_rebuild, (self.view(np.ndarray).copy(), self.requires_grad))

    def __copy__(self):
        return Parameter(self.view(np.ndarray).copy(), self.requires_grad)

    def __deepcopy__(self, memo):
        p = Parameter(self.view(np.ndarray).copy(), self.requires_grad)
        if self.grad is not None:
            p.grad = self.grad.copy()
        memo[id(self)] = p
        return p

    def __repr__(self):
        return "Parameter containing:\n" + repr(self.view(np.ndarray))


def _rebuild(data, requires_grad):
    return Parameter(data, requires_grad)
