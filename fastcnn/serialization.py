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
    try:
        with np.load(path, allow_pickle=False) as data:
            return OrderedDict((key, np.array(data[key])) for key in data.files)
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError) as exc:
        raise ValueError(f"load: {path!r} could not be read as an .npz of arrays ({exc})") from None
