"""Losses as torch.nn.functional's (same arguments, defaults and results),
each with a gradient function of the same arguments plus grad_output:
cross_entropy / cross_entropy_grad, nll_loss / nll_loss_grad, mse_loss /
mse_loss_grad, binary_cross_entropy_with_logits / ..._grad. The gradient is
with respect to `input`; feed it to model.backward()."""
import numpy as np

from fastcnn._functional.activation import log_softmax, softmax
from fastcnn._validation import as_array, check_float

__all__ = ["loss_reduction", "cross_entropy", "cross_entropy_grad", "nll_loss", "nll_loss_grad", "mse_loss",
           "mse_loss_grad", "binary_cross_entropy_with_logits",
           "binary_cross_entropy_with_logits_grad"]

_REDUCTIONS = ("none", "mean", "sum")


def _reduction(reduction, op):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    return reduction


def _reduce(values, reduction, denominator=None):
    if reduction == "none":
        return np.asarray(values)
    total = values.sum(dtype=np.float64)
    if reduction == "sum":
        return np.asarray(total, values.dtype)
    denominator = values.size if denominator is None else denominator
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(total / denominator, values.dtype)


def _scale(grad_output, reduction, shape, dtype, denominator, op):
    """d(loss)/d(each unreduced term): grad_output spread by the reduction."""
    g = np.asarray(grad_output, np.float64)
    if reduction == "none":
        if g.shape != shape:
            raise ValueError(f"{op}: with reduction='none' grad_output must have shape {shape}, "
                             f"got {g.shape}")
        return g.astype(dtype)
    if g.size != 1:
        raise ValueError(f"{op}: grad_output of a reduced loss must be a scalar, got shape {g.shape}")
    if reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            g = g / denominator
    return np.full(shape, g.reshape(()), dtype)


class _Classes:
    """The checked operands of cross_entropy / nll_loss: input (N, C, *d) or
    (C,), class-index or probability targets, per-class weights."""

    def __init__(self, op, input, target, weight, ignore_index, label_smoothing=0.0):
        x = as_array(input, op)
        check_float(x, op)
        if x.ndim == 0:
            raise ValueError(f"{op}: input must have a class axis, got a 0-d array")
        self.unbatched = x.ndim == 1
        self.x = x[None] if self.unbatched else x
        t = as_array(target, op, "target")
        if self.unbatched and t.ndim in (0, 1) and (t.ndim == 0 or t.shape == x.shape):
            t = t[None]
        c = self.x.shape[1]
        self.classes = c
        self.probabilities = t.dtype.kind == "f"
        if self.probabilities:
            if t.dtype != x.dtype:
                raise TypeError(f"{op}: probability targets must have the input's dtype "
                                f"{x.dtype}, got {t.dtype}")
            if ignore_index >= 0:
                raise ValueError(f"{op}: ignore_index ({ignore_index}) applies to class-index "
                                 f"targets, not to probability targets")
            if t.shape != self.x.shape:
                raise ValueError(f"{op}: probability targets must have the input's shape "
                                 f"{self.x.shape}, got {t.shape}")
        else:
            if t.dtype.kind not in "iu":
                raise TypeError(f"{op}: target must hold class indices (integers) or "
                                f"probabilities (floats), got {t.dtype}")
            want = self.x.shape[:1] + self.x.shape[2:]
            if t.shape != want:
                raise ValueError(f"{op}: expected target of shape {want} for input "
                                 f"{self.x.shape}, got {t.shape}")
            valid = t != ignore_index
            if np.any((t[valid] < 0) | (t[valid] >= c)):
                raise ValueError(f"{op}: target values must be in [0, {c}) or ignore_index "
                                 f"({ignore_index}), got values from {t.min()} to {t.max()}")
            self.valid = valid
            self.safe = np.where(valid, t, 0).astype(np.intp)
        self.t = t
        if weight is not None:
            weight = as_array(weight, op, "weight")
            if weight.dtype != x.dtype:
                raise TypeError(f"{op}: weight dtype {weight.dtype} does not match input "
                                f"dtype {x.dtype}")
            if weight.shape != (c,):
                raise ValueError(f"{op}: weight must have shape ({c},), got {weight.shape}")
        self.weight = weight
        ls = float(label_smoothing)
        if not 0.0 <= ls <= 1.0:
            raise ValueError(f"{op}: label_smoothing must be between 0.0 and 1.0, got {ls}")
        self.smoothing = ls

    def class_axis(self, v):
        """A (C,) vector shaped to broadcast along the class axis."""
        return v.reshape((1, -1) + (1,) * (self.x.ndim - 2))

    def picked(self, a):
        """a[n, target[n, ...], ...] for index targets (zeros with no classes:
        every target is then ignore_index)."""
        if not self.classes:
            return np.zeros(self.t.shape, a.dtype)
        return np.take_along_axis(a, self.safe[:, None], axis=1)[:, 0]

    def target_weights(self):
        if self.weight is None or not self.classes:
            w = np.ones(self.t.shape, self.x.dtype)
        else:
            w = self.weight[self.safe]
        return np.where(self.valid, w, 0).astype(self.x.dtype)

    def unbatch(self, a):
        return a[0, ...] if self.unbatched and np.ndim(a) else a


def _nll_terms(cls, logp):
    """Per-position loss terms and the mean's denominator (index targets)."""
    tw = cls.target_weights()
    with np.errstate(invalid="ignore"):       # an ignored position's NaN or Inf times 0
        terms = np.where(cls.valid, -tw * cls.picked(logp), 0).astype(logp.dtype)
    if cls.smoothing:
        w = 1 if cls.weight is None else cls.class_axis(cls.weight)
        with np.errstate(invalid="ignore", divide="ignore"):   # no classes: 0 / 0, as PyTorch
            smooth = np.where(cls.valid, -(logp * w).sum(axis=1), 0) * \
                (np.float64(cls.smoothing) / cls.classes)
        terms = (1 - cls.smoothing) * terms + smooth.astype(terms.dtype)
    return terms, tw.sum(dtype=np.float64)


def _nll_dlogp(cls, scale):
    """d loss / d logp for index targets, given d loss / d each term."""
    d = np.zeros(cls.x.shape, cls.x.dtype)
    tw = cls.target_weights() * scale
    np.put_along_axis(d, cls.safe[:, None], -(1 - cls.smoothing) * tw[:, None], axis=1)
    if cls.smoothing:
        w = 1 if cls.weight is None else cls.class_axis(cls.weight)
        d -= cls.smoothing * w * np.where(cls.valid, scale, 0)[:, None] / cls.classes
    return d


def _probability_denominator(cls):
    """The mean's denominator for probability targets: the positions
    (PyTorch divides numel by the classes, so no classes gives 0 / 0)."""
    return cls.x.size / cls.classes if cls.classes else float("nan")


def _probability_terms(cls, logp):
    t = cls.t.astype(cls.x.dtype)
    if cls.smoothing:
        with np.errstate(divide="ignore"):
            t = t * (1 - cls.smoothing) + np.float64(cls.smoothing) / cls.classes
    w = 1 if cls.weight is None else cls.class_axis(cls.weight)
    return -(logp * t * w).sum(axis=1), t * w


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    """Cross-entropy of logits (N, C, *d) or (C,) with class-index or
    class-probability targets, as torch.nn.functional.cross_entropy."""
    op = "cross_entropy"
    reduction = _reduction(loss_reduction(size_average, reduce, reduction), op)
    cls = _Classes(op, input, target, weight, ignore_index, label_smoothing)
    logp = log_softmax(cls.x, 1)
    if cls.probabilities:
        terms, _ = _probability_terms(cls, logp)
        return cls.unbatch(_reduce(terms, reduction, _probability_denominator(cls)))
    terms, denominator = _nll_terms(cls, logp)
    return cls.unbatch(_reduce(terms, reduction, denominator))


def cross_entropy_grad(input, target, weight=None, size_average=None, ignore_index=-100,
                       reduce=None, reduction="mean", label_smoothing=0.0, grad_output=1.0):
    """d cross_entropy(input, target, ...) / d input, times grad_output (a
    scalar, or the per-position gradients with reduction='none')."""
    op = "cross_entropy_grad"
    reduction = _reduction(loss_reduction(size_average, reduce, reduction), op)
    cls = _Classes(op, input, target, weight, ignore_index, label_smoothing)
    logp = log_softmax(cls.x, 1)
    term_shape = cls.x.shape[:1] + cls.x.shape[2:]
    g = np.asarray(grad_output)
    if cls.unbatched and reduction == "none" and g.ndim == 0:
        g = g.reshape(1)
    if cls.probabilities:
        scale = _scale(g, reduction, term_shape, cls.x.dtype, _probability_denominator(cls), op)
        _, tw = _probability_terms(cls, logp)
        dlogp = -tw * scale[:, None]
    else:
        denominator = cls.target_weights().sum(dtype=np.float64)
        scale = _scale(g, reduction, term_shape, cls.x.dtype, denominator, op)
        dlogp = _nll_dlogp(cls, scale)
    # through log_softmax: dx = dlogp - softmax * sum(dlogp)
    gx = dlogp - softmax(cls.x, 1) * dlogp.sum(axis=1, keepdims=True)
    return cls.unbatch(gx.astype(cls.x.dtype))


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean"):
    """Negative log-likelihood of log-probabilities (N, C, *d) or (C,), as
    torch.nn.functional.nll_loss."""
    op = "nll_loss"
    reduction = _reduction(loss_reduction(size_average, reduce, reduction), op)
    cls = _Classes(op, input, target, weight, ignore_index)
    if cls.probabilities:
        raise TypeError(f"{op}: target must hold class indices (integers), got {cls.t.dtype}")
    terms, denominator = _nll_terms(cls, cls.x)
    return cls.unbatch(_reduce(terms, reduction, denominator))


def nll_loss_grad(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", grad_output=1.0):
    """d nll_loss(input, target, ...) / d input, times grad_output."""
    op = "nll_loss_grad"
    reduction = _reduction(loss_reduction(size_average, reduce, reduction), op)
    cls = _Classes(op, input, target, weight, ignore_index)
    if cls.probabilities:
        raise TypeError(f"{op}: target must hold class indices (integers), got {cls.t.dtype}")
    g = np.asarray(grad_output)
    if cls.unbatched and reduction == "none" and g.ndim == 0:
        g = g.reshape(1)
    scale = _scale(g, reduction, cls.t.shape, cls.x.dtype,
                   cls.target_weights().sum(dtype=np.float64), op)
    return cls.unbatch(_nll_dlogp(cls, scale))


def _pair(op, input, target, broadcast=True):
    """input and target as arrays of input's dtype; the target broadcast to
    the input's shape (mse_loss) or of the same shape (the BCE loss)."""
    x = as_array(input, op)
    y = as_array(target, op, "target")
    check_float(x, op)
    if y.shape != x.shape and not broadcast:
        raise ValueError(f"{op}: target must have the input's shape {x.shape}, got {y.shape}")
    if y.shape != x.shape:
        try:
            y = np.broadcast_to(y, x.shape)
        except ValueError:
            raise ValueError(f"{op}: target shape {y.shape} does not broadcast to the input's "
                             f"{x.shape}") from None
    return x, y.astype(x.dtype, copy=False)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """Mean squared error, as torch.nn.functional.mse_loss."""
    reduction = _reduction(loss_reduction(size_average, reduce, reduction), "mse_loss")
    x, y = _pair("mse_loss", input, target)
    d = x - y
    return _reduce(d * d, reduction)


def mse_loss_grad(input, target, size_average=None, reduce=None, reduction="mean",
                  grad_output=1.0):
    """d mse_loss(input, target) / d input, times grad_output."""
    op = "mse_loss_grad"
    reduction = _reduction(loss_reduction(size_average, reduce, reduction), op)
    x, y = _pair(op, input, target)
    return np.asarray(2 * (x - y) * _scale(grad_output, reduction, x.shape, x.dtype, x.size, op),
                      x.dtype)


def _bce_operands(op, input, target, weight, pos_weight):
    x, y = _pair(op, input, target, broadcast=False)
    return x, y, _broadcast_weight(op, "weight", weight, x), \
        _broadcast_weight(op, "pos_weight", pos_weight, x)


def _broadcast_weight(op, name, weight, x):
    if weight is None:
        return None
    w = as_array(weight, op, name)
    try:
        return np.broadcast_to(w, x.shape)
    except ValueError:
        raise ValueError(f"{op}: {name} of shape {w.shape} does not broadcast to the input's "
                         f"{x.shape}") from None


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction="mean", pos_weight=None):
    """Sigmoid + binary cross-entropy in one stable formula, as
    torch.nn.functional.binary_cross_entropy_with_logits."""
    op = "binary_cross_entropy_with_logits"
    reduction = _reduction(loss_reduction(size_average, reduce, reduction), op)
    x, y, w, pw = _bce_operands(op, input, target, weight, pos_weight)
    # log(1 + exp(-x)) without overflow: log1p(exp(-|x|)) + max(-x, 0)
    soft = np.log1p(np.exp(-np.abs(x))) + np.maximum(-x, 0)
    if pw is None:
        terms = (1 - y) * x + soft
    else:
        terms = (1 - y) * x + (1 + (pw - 1) * y) * soft
    if w is not None:
        terms = terms * w
    return _reduce(terms.astype(x.dtype), reduction)


def binary_cross_entropy_with_logits_grad(input, target, weight=None, size_average=None,
                                          reduce=None, reduction="mean", pos_weight=None,
                                          grad_output=1.0):
    """d binary_cross_entropy_with_logits(...) / d input, times grad_output."""
    op = "binary_cross_entropy_with_logits_grad"
    reduction = _reduction(loss_reduction(size_average, reduce, reduction), op)
    x, y, w, pw = _bce_operands(op, input, target, weight, pos_weight)
    s = 1 / (1 + np.exp(-x.astype(np.float64)))
    d = s - y if pw is None else (1 - y) * s - pw * y * (1 - s)
    if w is not None:
        d = d * w
    return np.asarray(d * _scale(grad_output, reduction, x.shape, x.dtype, x.size, op), x.dtype)


def loss_reduction(size_average, reduce, reduction):
    """PyTorch's deprecated size_average / reduce pair, folded into reduction."""
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if not reduce:
        return "none"
    return "mean" if size_average else "sum"
