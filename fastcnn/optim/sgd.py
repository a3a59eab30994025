"""Stochastic gradient descent with momentum, dampening, Nesterov momentum
and weight decay, as torch.optim.SGD."""
import numpy as np

from fastcnn import _kernels
from fastcnn._threads import get_num_threads
from fastcnn.optim.optimizer import Optimizer, contiguous_update

__all__ = ["SGD"]


class SGD(Optimizer):
    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize))

    def _check(self, group):
        for key in ("lr", "momentum", "weight_decay"):
            if not group[key] >= 0:
                raise ValueError(f"SGD: invalid {key} {group[key]} (must be >= 0)")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("SGD: Nesterov momentum requires a momentum and zero dampening")

    def step(self, closure=None):
        """One update of every parameter with a gradient:
        d = g + wd p; buf = momentum buf + (1 - dampening) d (buf = d at first);
        d = d + momentum buf (Nesterov) or buf; p -= lr d. One pass per
        parameter, in the kernels' threads."""
        loss = closure() if closure is not None else None
        threads = get_num_threads()
        for group in self.param_groups:
            momentum = group["momentum"]
            for p, g, state in self._grads(group):
                buf = state.get("momentum_buffer")
                first = buf is None
                if momentum and first:
                    buf = state["momentum_buffer"] = np.empty_like(p)
                with contiguous_update(p) as target:
                    _kernels._grad.sgd_step(target, np.ascontiguousarray(g),
                                            buf if momentum else None, group["lr"], momentum,
                                            group["dampening"], group["weight_decay"],
                                            group["nesterov"], first, threads)
        return loss
