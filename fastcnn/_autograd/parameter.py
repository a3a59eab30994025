"""Parameter: a learnable array that keeps its identity and carries .grad."""
import numpy as np

__all__ = ["Parameter"]


def _plain(obj):
    if isinstance(obj, Parameter):
        return np.ndarray.view(obj, np.ndarray)
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


# NumPy functions that write into their first argument.
_WRITES_FIRST = frozenset((np.copyto, np.put, np.place, np.putmask, np.fill_diagonal))


class Parameter(np.ndarray):
    """A module's learnable array (torch.nn.Parameter's role).

    Parameter(data) shares data's memory. Modules keep the same Parameter
    object for their lifetime (load_state_dict and optimizers write into it);
    `grad` holds its gradient after a backward (None until then, accumulated
    by later backward calls, reset by zero_grad()), and `requires_grad`
    says whether backward computes it. Arithmetic and NumPy functions on a
    Parameter give plain arrays, as do its views.

    `_version` counts the writes made through it (item assignment, in-place
    arithmetic, np.copyto / put / place / putmask, fill, load_state_dict,
    optimizer steps) and the plain views it hands out (indexing, .data,
    .detach(), .view(), reshape and the like), which may be written later:
    values derived from a Parameter (an eval-mode Conv layer's packed
    weights) are rebuilt whenever it moves. Writes it cannot see, through
    np.asarray(p) or a view taken before the values were derived, need
    module.eval() (or train()) again to drop them.
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
        self._version = 0

    def _written(self):
        """Count a write, or a plain view handed out (see the class)."""
        self._version += 1

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        if _foreign(inputs) or (out is not None and _foreign(out)):
            return NotImplemented
        if out is not None:
            kwargs["out"] = _plain(out)
        result = getattr(ufunc, method)(*_plain(inputs), **kwargs)
        for o in out or ():
            if isinstance(o, Parameter):
                o._written()
        return result

    def __array_function__(self, func, types, args, kwargs):
        if _foreign(args) or _foreign(kwargs.values()):
            return NotImplemented
        result = func(*_plain(args), **{k: _plain(v) for k, v in kwargs.items()})
        for target in ((args[0] if func in _WRITES_FIRST and args else None), kwargs.get("out")):
            if isinstance(target, Parameter):
                target._written()
        return result

    def __setitem__(self, key, value):
        np.ndarray.__setitem__(self, key, value)
        self._written()

    def fill(self, value):
        np.ndarray.fill(self, value)
        self._written()

    def put(self, indices, values, mode="raise"):
        np.ndarray.put(self, indices, values, mode)
        self._written()

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
        return _plain(self).flatten(order)

    def squeeze(self, axis=None):
        return self.view(np.ndarray).squeeze(axis)

    def copy(self, order="C"):
        return _plain(self).copy(order)

    def astype(self, dtype, *args, **kwargs):
        return _plain(self).astype(dtype, *args, **kwargs)

    def view(self, *args, **kwargs):
        self._written()                     # the view may be written
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
        return (_rebuild, (_plain(self).copy(), self.requires_grad))

    def __copy__(self):
        return Parameter(_plain(self).copy(), self.requires_grad)

    def __deepcopy__(self, memo):
        p = Parameter(_plain(self).copy(), self.requires_grad)
        if self.grad is not None:
            p.grad = self.grad.copy()
        memo[id(self)] = p
        return p

    def __repr__(self):
        return "Parameter containing:\n" + repr(_plain(self))


def _rebuild(data, requires_grad):
    return Parameter(data, requires_grad)
