"""Loss layers, as torch.nn's: CrossEntropyLoss, NLLLoss, MSELoss,
BCEWithLogitsLoss. Calling one gives the loss; its backward() then gives
the gradient with respect to the input of that call, ready for
model.backward():

    loss = criterion(model(x), y)
    model.backward(criterion.backward())
"""
import numpy as np

from fastcnn import functional as F
from fastcnn.nn.module import Module

__all__ = ["CrossEntropyLoss", "NLLLoss", "MSELoss", "BCEWithLogitsLoss"]


class _Loss(Module):
    _loss = _grad = None          # the functional pair

    def __init__(self, reduction="mean"):
        super().__init__()
        if reduction not in ("none", "mean", "sum"):
            raise ValueError(f"{type(self).__name__}: reduction must be 'none', 'mean' or "
                             f"'sum', got {reduction!r}")
        self.reduction = reduction
        self._last = None

    def _options(self):
        return {"reduction": self.reduction}

    def __call__(self, input, target):
        # a loss is not part of the model's recorded forward: backward() is its own
        return self.forward(input, target)

    def forward(self, input, target):
        loss = type(self)._loss(input, target, **self._options())
        self._last = (input, target)
        return loss

    def backward(self, grad_output=1.0):
        """The gradient of the last loss computed with respect to its input."""
        if self._last is None:
            raise RuntimeError(f"{type(self).__name__}.backward: no loss computed yet")
        input, target = self._last
        return type(self)._grad(input, target, grad_output=grad_output, **self._options())

    def extra_repr(self):
        return "" if self.reduction == "mean" else f"reduction={self.reduction}"


class CrossEntropyLoss(_Loss):
    """Cross-entropy of logits with class-index or probability targets."""
    _loss, _grad = staticmethod(F.cross_entropy), staticmethod(F.cross_entropy_grad)

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean", label_smoothing=0.0):
        super().__init__(F.loss_reduction(size_average, reduce, reduction))
        self.register_buffer("weight", None if weight is None else np.asarray(weight))
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def _options(self):
        return {"weight": self.weight, "ignore_index": self.ignore_index,
                "reduction": self.reduction, "label_smoothing": self.label_smoothing}


class NLLLoss(_Loss):
    """Negative log-likelihood of log-probabilities."""
    _loss, _grad = staticmethod(F.nll_loss), staticmethod(F.nll_loss_grad)

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean"):
        super().__init__(F.loss_reduction(size_average, reduce, reduction))
        self.register_buffer("weight", None if weight is None else np.asarray(weight))
        self.ignore_index = ignore_index

    def _options(self):
        return {"weight": self.weight, "ignore_index": self.ignore_index,
                "reduction": self.reduction}


class MSELoss(_Loss):
    """Mean squared error."""
    _loss, _grad = staticmethod(F.mse_loss), staticmethod(F.mse_loss_grad)

    def __init__(self, size_average=None, reduce=None, reduction="mean"):
        super().__init__(F.loss_reduction(size_average, reduce, reduction))


class BCEWithLogitsLoss(_Loss):
    """Sigmoid and binary cross-entropy, numerically stable."""
    _loss = staticmethod(F.binary_cross_entropy_with_logits)
    _grad = staticmethod(F.binary_cross_entropy_with_logits_grad)

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean",
                 pos_weight=None):
        super().__init__(F.loss_reduction(size_average, reduce, reduction))
        self.register_buffer("weight", None if weight is None else np.asarray(weight))
        self.register_buffer("pos_weight", None if pos_weight is None else np.asarray(pos_weight))

    def _options(self):
        return {"weight": self.weight, "pos_weight": self.pos_weight,
                "reduction": self.reduction}
