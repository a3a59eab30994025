"""Adam and AdamW (decoupled weight decay), as torch.optim's, amsgrad included."""
import math

import numpy as np

from fastcnn.optim.optimizer import Optimizer

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize))

    def _check(self, group):
        name = type(self).__name__
        if not group["lr"] >= 0 or not group["eps"] >= 0 or not group["weight_decay"] >= 0:
            raise ValueError(f"{name}: lr, eps and weight_decay must be >= 0")
        if not all(0.0 <= b < 1.0 for b in group["betas"]):
            raise ValueError(f"{name}: betas must be in [0, 1), got {group['betas']}")

    def step(self, closure=None):
        """m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
        p -= lr / (1 - b1^t) m / (sqrt(v) / sqrt(1 - b2^t) + eps)."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p, g, state in self._grads(group):
                t = p.dtype.type
                if wd and self._decoupled:
                    p *= t(1 - lr * wd)
                elif wd:
                    g = g + p * t(wd)
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = np.zeros_like(p)
                    state["exp_avg_sq"] = np.zeros_like(p)
                    if group["amsgrad"]:
                        state["max_exp_avg_sq"] = np.zeros_like(p)
                state["step"] += 1
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m *= t(b1)
                m += g * t(1 - b1)
                v *= t(b2)
                v += g * g * t(1 - b2)
                if group["amsgrad"]:
                    np.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
                    v = state["max_exp_avg_sq"]
                bias1 = 1 - b1 ** state["step"]
                bias2 = 1 - b2 ** state["step"]
                denom = np.sqrt(v) / t(math.sqrt(bias2)) + t(eps)
                p -= t(lr / bias1) * m / denom
        return loss


class AdamW(Adam):
    """Adam with decoupled weight decay: p *= 1 - lr wd before the Adam step."""
    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize)
