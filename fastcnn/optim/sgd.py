"""Stochastic gradient descent with momentum, dampening, Nesterov momentum
and weight decay, as torch.optim.SGD."""
import numpy as np

from fastcnn.optim.optimizer import Optimizer

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
        d = d + momentum buf (Nesterov) or buf; p -= lr d."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p, g, state in self._grads(group):
                d = g + p * p.dtype.type(wd) if wd else g
                if momentum:
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = np.array(d, copy=True)
                    else:
                        buf *= p.dtype.type(momentum)
                        buf += d * p.dtype.type(1 - group["dampening"])
                    d = d + buf * p.dtype.type(momentum) if group["nesterov"] else buf
                p -= d * p.dtype.type(lr)
        return loss
