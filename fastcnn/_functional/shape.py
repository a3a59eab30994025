"""flatten and unflatten: reshapes that return views where NumPy can."""
import math

from fastcnn._graph import traceable
from fastcnn._validation import as_array

__all__ = ["flatten", "unflatten"]


def _dim(dim, ndim, op, name="dim"):
    try:
        dim = int(dim)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: {name} must be an int, got {dim!r}") from None
    n = max(ndim, 1)
    if not -n <= dim < n:
        raise ValueError(f"{op}: {name} {dim} is out of range for an input with {ndim} "
                         f"dimension(s) (expected to be in range of [{-n}, {n - 1}])")
    return dim % n


@traceable("flatten")
def flatten(input, start_dim=0, end_dim=-1):
    """Merge dims start_dim..end_dim into one, as torch.flatten (a view where possible)."""
    x = as_array(input, "flatten")
    start = _dim(start_dim, x.ndim, "flatten", "start_dim")     # a scalar counts as 1-D
    end = _dim(end_dim, x.ndim, "flatten", "end_dim")
    if x.ndim == 0:
        return x.reshape(1)
    if start > end:
        raise ValueError(f"flatten: start_dim ({start_dim}) cannot come after end_dim ({end_dim})")
    shape = x.shape[:start] + (math.prod(x.shape[start:end + 1]),) + x.shape[end + 1:]
    return x.reshape(shape)


@traceable("unflatten")
def unflatten(input, dim, sizes):
    """Split dim into `sizes` (one entry may be -1), as torch.unflatten."""
    x = as_array(input, "unflatten")
    if x.ndim == 0:
        raise ValueError("unflatten: expected an input with at least one dimension, got a "
                         "0-dimensional array")
    d = _dim(dim, x.ndim, "unflatten")
    sizes = tuple(int(s) for s in sizes)
    if not sizes:
        raise ValueError("unflatten: sizes must be non-empty")
    if sizes.count(-1) > 1 or any(s < -1 for s in sizes):
        raise ValueError(f"unflatten: sizes may hold one -1 and no other negative size, got {sizes}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if known == 0 or x.shape[d] % known:
            raise ValueError(f"unflatten: sizes {sizes} do not divide dimension {d} of size "
                             f"{x.shape[d]}")
        sizes = tuple(x.shape[d] // known if s == -1 else s for s in sizes)
    elif known != x.shape[d]:
        raise ValueError(f"unflatten: sizes {sizes} multiply to {known}, but dimension {d} has "
                         f"size {x.shape[d]}")
    return x.reshape(x.shape[:d] + sizes + x.shape[d + 1:])
