"""Module, the base of every layer (the containers are in container.py).

PyTorch's habits on NumPy arrays: assigning a Parameter or a Module to an
attribute registers it; buffers are registered with register_buffer;
state_dict() and load_state_dict() use PyTorch's dotted key names, so a
PyTorch state_dict converted with {k: v.numpy()} loads unchanged.

Training: a call in training mode with gradients enabled records the forward
(fastcnn._autograd.tape); backward(grad_output) walks it in reverse, leaving
each parameter's gradient in its .grad.
"""
from collections import OrderedDict

import numpy as np

from fastcnn import _graph
from fastcnn._autograd import mode as _grad_mode
from fastcnn._autograd import tape as _tape
from fastcnn._autograd.parameter import Parameter

__all__ = ["Parameter", "Module", "Identity"]


def _parameter(value, like=None):
    """value as a Parameter (itself when it is one); a new one keeps the
    requires_grad of the parameter it replaces."""
    if isinstance(value, Parameter):
        return value
    return Parameter(np.asarray(value), True if like is None else like.requires_grad)


def _as_numpy(value):
    """An array from a state_dict value: NumPy arrays and array-likes, and
    PyTorch tensors and Parameters (their memory, no copy, for CPU tensors)."""
    if not isinstance(value, np.ndarray) and hasattr(value, "detach") and hasattr(value, "numpy"):
        value = value.detach().numpy()
    return np.asarray(value)


class Module:
    """Base class for layers and networks; subclasses define forward()."""

    _version = 1

    def __init__(self):
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())

    # ------------------------------------------------------------ attributes
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError("cannot assign attributes before Module.__init__() call")
        params, buffers, modules = self._parameters, self._buffers, self._modules
        if isinstance(value, Parameter):
            self._forget(name)
            params[name] = value
        elif isinstance(value, Module):
            self._forget(name)
            modules[name] = value
        elif name in params:
            params[name] = None if value is None else _parameter(value, params[name])
        elif name in buffers:
            buffers[name] = None if value is None else np.asarray(value)
        elif name in modules:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as child module "
                                f"'{name}' (Module or None expected)")
            modules[name] = None
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name):
        for store in (self.__dict__, self._parameters, self._buffers, self._modules):
            store.pop(name, None)

    def __getattr__(self, name):
        # Only called when normal lookup fails: parameters, buffers, modules.
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                return
        object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers)
                      | set(self._modules))

    def register_parameter(self, name, param):
        """Add a parameter (an array, or None for an absent one like bias=False)."""
        self._check_name(name)
        self._forget(name)
        self._parameters[name] = None if param is None else _parameter(param)

    def register_buffer(self, name, tensor, persistent=True):
        """Add a buffer: state that is not a parameter (e.g. running_mean)."""
        self._check_name(name)
        self._forget(name)
        self._buffers[name] = None if tensor is None else np.asarray(tensor)
        if not persistent:
            self.__dict__.setdefault("_non_persistent", set()).add(name)

    def add_module(self, name, module):
        self._check_name(name)
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._forget(name)
        self._modules[name] = module

    register_module = add_module

    @staticmethod
    def _check_name(name):
        if not isinstance(name, str):
            raise TypeError(f"name must be a string, got {type(name).__name__}")
        if "." in name or name == "":
            raise KeyError(f"name must be non-empty and contain no '.', got {name!r}")

    # ------------------------------------------------------------ running
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward() defined")

    def __call__(self, *args, **kwargs):
        hook = _graph.module_call_hook      # set while a graph tracer records in some thread
        if hook is not None and _graph.tracing():
            return hook(self, args, kwargs)
        if self.training and _grad_mode.is_grad_enabled():
            return _tape.record(self, args, kwargs)
        return self.forward(*args, **kwargs)

    # ------------------------------------------------------------ gradients
    def backward(self, grad_output, *, input_grad=True):
        """Back-propagate grad_output (the gradient of a loss with respect to
        this module's output from its last training-mode call; a tuple for
        several outputs) through that call: every parameter with
        requires_grad gets its gradient added to .grad. Returns the gradient
        with respect to the input (a tuple for several inputs), or None with
        input_grad=False, which skips computing it."""
        tape = self.__dict__.get("_tape")
        if tape is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward: no recorded forward to go back through: call "
                f"the module in training mode (model.train()) with gradients enabled first"
                if "_tape" not in self.__dict__ else
                f"{type(self).__name__}.backward: this forward was already back-propagated "
                f"(its saved arrays are freed); run the forward again")
        grads = tape.output_grads(grad_output)
        object.__setattr__(self, "_tape", None)
        return tape.backward(grads, input_grad)

    def __getstate__(self):
        """Pickles and copies leave out the recorded forward (its tape holds one
        call's arrays and the functions it ran, which do not pickle): backward()
        on them needs a forward of their own."""
        state = self.__dict__.copy()
        state.pop("_tape", None)
        return state

    def zero_grad(self, set_to_none=True):
        """Reset every parameter's gradient: to None (PyTorch's default), or to zeros."""
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad[...] = 0

    def requires_grad_(self, requires_grad=True):
        """Set requires_grad on every parameter (False freezes them)."""
        for p in self.parameters():
            p.requires_grad = bool(requires_grad)
        return self

    def train(self, mode=True):
        if not isinstance(mode, (bool, np.bool_)):
            raise ValueError(f"train: training mode is expected to be boolean, got "
                             f"{type(mode).__name__}")
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
            m._state_changed()          # values derived from parameters are rebuilt
        return self

    def eval(self):
        return self.train(False)

    # ------------------------------------------------------------ traversal
    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is None:
                continue
            sub = prefix + ("." if prefix else "") + name
            yield from module.named_modules(memo, sub, remove_duplicate)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        seen = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self):
        for _, m in self.named_children():
            yield m

    def _named_members(self, store, prefix, recurse):
        seen = set()
        modules = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, value in getattr(module, store).items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))
                yield module_prefix + ("." if module_prefix else "") + name, value

    def named_parameters(self, prefix="", recurse=True):
        yield from self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix="", recurse=True):
        yield from self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse=True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def apply(self, fn):
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------ state
    def state_dict(self, destination=None, prefix="", keep_vars=False):
        """Ordered name -> array (references, as PyTorch) of parameters and
        persistent buffers, with PyTorch's dotted names; parameters as plain
        arrays sharing their memory (the Parameters with keep_vars=True)."""
        if destination is None:
            destination = OrderedDict()
        non_persistent = self.__dict__.get("_non_persistent", ())
        for name, p in self._parameters.items():
            if p is not None:
                destination[prefix + name] = p if keep_vars else p.view(np.ndarray)
        for name, b in self._buffers.items():
            if b is not None and name not in non_persistent:
                destination[prefix + name] = b
        for name, module in self._modules.items():
            if module is not None:
                module.state_dict(destination, prefix + name + ".", keep_vars)
        return destination

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays from state_dict into this module's parameters and buffers.

        Everything is checked first (missing and unexpected keys when strict,
        shapes, convertible dtypes) and converted; only then are the values
        copied into the existing arrays (Parameters keep their identity, so
        optimizers holding them see the loaded values), so a failed load
        leaves the module unchanged.
        Returns (missing_keys, unexpected_keys) like PyTorch.
        """
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"load_state_dict: expected a mapping, got {type(state_dict).__name__}")
        own = OrderedDict()
        for module_prefix, module in self.named_modules():
            non_persistent = module.__dict__.get("_non_persistent", ())
            for store in ("_parameters", "_buffers"):
                for name, value in getattr(module, store).items():
                    if value is None or name in non_persistent:
                        continue
                    key = module_prefix + ("." if module_prefix else "") + name
                    own[key] = (module, store, name, value)
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict.keys() if k not in own]
        errors = []
        if strict and unexpected:
            errors.append("Unexpected key(s) in state_dict: " + ", ".join(repr(k) for k in unexpected))
        if strict and missing:
            errors.append("Missing key(s) in state_dict: " + ", ".join(repr(k) for k in missing))
        staged = []
        for key, (module, store, name, current) in own.items():
            if key not in state_dict:
                continue
            src = state_dict[key]
            try:
                arr = _as_numpy(src)
            except Exception:
                errors.append(f"{key}: value of type {type(src).__name__} is not an array "
                              f"(for PyTorch tensors on another device: .detach().cpu().numpy())")
                continue
            if arr.shape != current.shape:
                errors.append(f"size mismatch for {key}: copying a param with shape "
                              f"{arr.shape} from checkpoint, the shape in current model is "
                              f"{current.shape}")
                continue
            if arr.dtype == object or np.iscomplexobj(arr) or not (
                    np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
                errors.append(f"{key}: dtype {arr.dtype} cannot be loaded into {current.dtype}")
                continue
            if np.issubdtype(current.dtype, np.integer) and not np.issubdtype(arr.dtype, np.integer):
                errors.append(f"{key}: dtype {arr.dtype} cannot be loaded into {current.dtype}")
                continue
            staged.append((module, store, name, np.array(arr, dtype=current.dtype, copy=True)))
        if errors:
            raise ValueError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                             + "\n\t".join(errors))
        for module, store, name, arr in staged:
            current = getattr(module, store)[name]
            if current.flags.writeable:
                np.copyto(current, arr)
            elif store == "_parameters":
                getattr(module, store)[name] = _parameter(arr, current)
            else:
                getattr(module, store)[name] = arr
            module._state_changed()
        return _IncompatibleKeys(missing, unexpected)

    def _state_changed(self):
        """Hook for layers that cache values derived from their parameters
        (called by load_state_dict, to() and train() / eval())."""

    # ------------------------------------------------------------ dtype
    def to(self, *args, dtype=None, device=None):
        """Convert floating-point parameters and buffers to a dtype, as
        torch.nn.Module.to: model.to(np.float64), model.to("cpu"),
        model.to(dtype=...). Integer buffers (num_batches_tracked) stay.
        In place; returns self. Optimizers hold the arrays they were given:
        make them after .to(), as in PyTorch."""
        for a in args:
            if isinstance(a, str) and device is None and a.split(":")[0] in ("cpu", "cuda",
                                                                             "mps", "xpu"):
                device = a
            elif dtype is None:
                dtype = a
            else:
                raise TypeError(f"to: unexpected argument {a!r}")
        if device is not None and str(device) != "cpu":
            raise ValueError(f"to: fastcnn runs on the CPU only, got device {device!r}")
        if dtype is None:
            return self
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"to: expected a NumPy floating dtype, got {dtype!r}") from None
        if dtype.kind != "f":
            raise TypeError(f"to: only floating dtypes convert a module's parameters, got {dtype}")
        for module in self.modules():
            changed = False
            for store in (module._parameters, module._buffers):
                for name, value in store.items():
                    if value is not None and value.dtype.kind == "f" and value.dtype != dtype:
                        store[name] = value.astype(dtype) if store is module._buffers \
                            else Parameter(value.astype(dtype), value.requires_grad)
                        changed = True
            if changed:
                module._state_changed()
        return self

    def float(self):
        """Parameters and buffers to float32."""
        return self.to(np.float32)

    def double(self):
        """Parameters and buffers to float64."""
        return self.to(np.float64)

    # ------------------------------------------------------------ printing
    def extra_repr(self):
        return ""

    def _get_name(self):
        return type(self).__name__

    def __repr__(self):
        lines = []
        extra = self.extra_repr()
        if extra:
            lines = extra.split("\n")
        for name, module in self._modules.items():
            mod_str = repr(module).replace("\n", "\n  ")
            lines.append(f"({name}): {mod_str}")
        main = self._get_name() + "("
        if lines:
            if len(lines) == 1 and not self._modules:
                main += lines[0]
            else:
                main += "\n  " + "\n  ".join(lines) + "\n"
        return main + ")"


class _IncompatibleKeys(tuple):
    def __new__(cls, missing_keys, unexpected_keys):
        return super().__new__(cls, (missing_keys, unexpected_keys))

    @property
    def missing_keys(self):
        return self[0]

    @property
    def unexpected_keys(self):
        return self[1]

    def __repr__(self):
        if not self[0] and not self[1]:
            return "<All keys matched successfully>"
        return f"_IncompatibleKeys(missing_keys={self[0]}, unexpected_keys={self[1]})"


class Identity(Module):
    """Returns its input unchanged (any constructor arguments are ignored)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input
