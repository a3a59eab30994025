"""Adam and AdamW (decoupled weight decay), as torch.optim's, amsgrad included."""
import numpy as np

from fastcnn import _kernels
from fastcnn._threads import get_num_threads
from fastcnn.optim.optimizer import Optimizer, contiguous_update

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
        p -= lr / (1 - b1^t) m / (sqrt(v) / sqrt(1 - b2^t) + eps), one pass
        per parameter (AdamW first p *= 1 - lr wd; Adam adds wd p to g)."""
        loss = closure() if closure is not None else None
        threads = get_num_threads()
        for group in self.param_groups:
            (b1, b2) = group["betas"]
            for p, g, state in self._grads(group):
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = np.zeros_like(p)
                    state["exp_avg_sq"] = np.zeros_like(p)
                    if group["amsgrad"]:
                        state["max_exp_avg_sq"] = np.zeros_like(p)
                state["step"] += 1
                with contiguous_update(p) as target:
                    _kernels._grad.adam_step(target, np.ascontiguousarray(g), state["exp_avg"],
                                             state["exp_avg_sq"], state.get("max_exp_avg_sq"),
                                             group["lr"], b1, b2, group["eps"],
                                             group["weight_decay"], self._decoupled,
                                             state["step"], threads)
        return loss


class AdamW(Adam):
    """Adam with decoupled weight decay: p *= 1 - lr wd before the Adam step."""
    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize)
