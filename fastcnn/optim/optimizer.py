"""The optimizer base: parameter groups, per-parameter state, zero_grad and
state_dict / load_state_dict in PyTorch's layout."""
import contextlib
import copy

import numpy as np

from fastcnn._autograd.parameter import Parameter

__all__ = ["Optimizer", "contiguous_update"]


@contextlib.contextmanager
def contiguous_update(p):
    """p itself when the kernels can update it in place, else a contiguous
    native-order copy written back afterwards."""
    if p.flags.c_contiguous and p.dtype.isnative and p.flags.writeable:
        yield p
        return
    if not p.flags.writeable:
        raise ValueError("optimizer step: a parameter is read-only")
    work = np.ascontiguousarray(p, dtype=p.dtype.newbyteorder("="))
    yield work
    p[...] = work


class Optimizer:
    """Holds param_groups (dicts with "params" and the hyper-parameters) and
    state (per parameter). Subclasses define step()."""

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = {}                    # id(param) -> dict
        self.param_groups = []
        if isinstance(params, (Parameter, np.ndarray)):
            raise TypeError(f"{type(self).__name__}: params argument given to the optimizer "
                            f"should be an iterable of Parameters or dicts, but got a single "
                            f"array")
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__}: optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group):
        group = dict(group)
        params = group["params"]
        params = [params] if isinstance(params, np.ndarray) else list(params)
        for p in params:
            if not isinstance(p, Parameter):
                raise TypeError(f"{type(self).__name__}: optimizer can only optimize "
                                f"Parameters (model.parameters()), got {type(p).__name__}")
            if p.dtype.kind != "f":
                raise TypeError(f"{type(self).__name__}: parameters must be floating point, "
                                f"got {p.dtype}")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params) or len({id(p) for p in params}) != len(params):
            raise ValueError(f"{type(self).__name__}: some parameters appear in more than one "
                             f"parameter group")
        group["params"] = params
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self._check(group)
        self.param_groups.append(group)

    def _check(self, group):
        """Validate a group's hyper-parameters (subclasses)."""

    def zero_grad(self, set_to_none=True):
        """Reset the gradients of every parameter: to None (default) or zeros."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad[...] = 0

    def _grads(self, group):
        """(param, grad, state) for the group's parameters that have a gradient."""
        for p in group["params"]:
            if p.grad is None:
                continue
            g = np.asarray(p.grad)
            if g.shape != p.shape:
                raise ValueError(f"{type(self).__name__}.step: a gradient of shape {g.shape} "
                                 f"for a parameter of shape {p.shape}")
            if group.get("maximize"):
                g = -g
            yield p.view(np.ndarray), g.astype(p.dtype, copy=False), \
                self.state.setdefault(id(p), {})
            p._written()        # the step wrote it (see Parameter._version)

    def state_dict(self):
        """{"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}, as PyTorch."""
        index, groups, n = {}, [], 0
        for group in self.param_groups:
            ids = []
            for p in group["params"]:
                index.setdefault(id(p), n)
                ids.append(index[id(p)])
                n += 1
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        state = {index[k]: copy.deepcopy(v) for k, v in self.state.items() if k in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
                len(g["params"]) != len(own["params"]) for g, own in zip(groups, self.param_groups)):
            raise ValueError(f"{type(self).__name__}.load_state_dict: the state_dict's parameter "
                             f"groups do not match this optimizer's")
        params = {i: p for g, own in zip(groups, self.param_groups)
                  for i, p in zip(g["params"], own["params"])}
        self.state = {}
        for i, s in state_dict["state"].items():
            p = params[int(i)]
            self.state[id(p)] = {k: (np.array(v, dtype=p.dtype) if np.ndim(v) else v)
                                 for k, v in s.items()}
        for g, own in zip(groups, self.param_groups):
            own.update({k: v for k, v in g.items() if k != "params"})

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines) + "\n)"
