"""fastcnn.save / fastcnn.load: state_dicts as NumPy .npz files (no pickle)."""
import os
import zipfile
from collections import OrderedDict

import numpy as np

__all__ = ["save", "load"]


def save(state_dict, path):
    """Write a state_dict (name -> array) to an .npz file, keys and order kept."""
    if not hasattr(state_dict, "items"):
        raise TypeError(f"save: expected a mapping of names to arrays, got {type(state_dict).__name__}")
    arrays = OrderedDict()
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise TypeError(f"save: keys must be strings, got {key!r}")
        arr = np.asarray(value)
        if arr.dtype == object:
            raise TypeError(f"save: {key} is not a numeric array")
        arrays[key] = arr
    with open(os.fspath(path), "wb") as fh:
        np.savez(fh, **arrays)


def load(path):
    """Read a state_dict written by save (or any .npz of numeric arrays).

    Loading never executes pickled code (allow_pickle=False); a file that is
    not a readable .npz, truncated, or holding object arrays raises ValueError
    and nothing is returned half-read."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load: no such file {path!r}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"load: {path!r} is not an .npz file")
    _check_members(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return OrderedDict((key, np.array(data[key])) for key in data.files)
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError) as exc:
        raise ValueError(f"load: {path!r} could not be read as an .npz of arrays ({exc})") from None


def _check_members(path):
    """An .npz holds only .npy members; say what other zip files are."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"load: {path!r} could not be read as an .npz of arrays ({exc})") from None
    if any(n.endswith("data.pkl") for n in names):
        raise ValueError(
            f"load: {path!r} is a PyTorch checkpoint (torch.save), not a fastcnn .npz. Convert "
            f"it once with PyTorch: fastcnn.save({{k: v.numpy() for k, v in "
            f"torch.load(path).items()}}, 'weights.npz'), or pass that dict straight to "
            f"model.load_state_dict")
    other = [n for n in names if not n.endswith(".npy")]
    if other:
        raise ValueError(f"load: {path!r} is a zip file but not an .npz of arrays: it holds "
                         f"{len(other)} member(s) that are not .npy arrays, e.g. {other[0]!r}")
