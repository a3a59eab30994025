"""Large temporaries from the heap, not from fresh mappings.

glibc serves every allocation above M_MMAP_THRESHOLD (128 KiB until a large
block has been freed) from a mapping of its own and unmaps it on free, so an
array allocated per call (an eager layer's output, a gradient) page-faults on
every page it touches: about a thousand faults per LeNet-5 training step at
batch 64, a quarter of the step on a VM. glibc raises the threshold by itself
after the first large free, up to 32 MiB, and only then; a process that has
loaded other large libraries has often passed that point, one that has not
pays on every call. fastcnn sets what glibc would reach: M_MMAP_THRESHOLD
32 MiB and M_TRIM_THRESHOLD 64 MiB (freed heap memory up to that size stays
mapped for the next call).

A training step is larger: its backward frees the forward's saved arrays as it
goes, the freed top of the heap passes any fixed threshold, glibc returns it,
and the next step's forward faults it in again (ResNet-18 at batch 8: 16,000
faults a step, 7 % of it). So a backward runs inside held(): nothing is
returned while it runs, and afterwards the trim threshold is the heap's size
(never lowered), so the next step reuses the same memory. Peak memory is
unchanged; between steps the process keeps it. FASTCNN_MALLOC_TUNING=0 leaves
malloc as it is.
"""
import contextlib
import ctypes
import os
import platform

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 64 * 2**20
_INT_MAX = 2**31 - 1                # mallopt takes an int

state = "not applied"
_libc = None                        # set once the thresholds are applied
_mallinfo = None                    # glibc's mallinfo2 (or mallinfo), typed once
_trim = TRIM_THRESHOLD


def tune():
    """Apply the thresholds once (glibc only); returns what was done, as text."""
    global state, _libc, _mallinfo
    if os.environ.get("FASTCNN_MALLOC_TUNING", "1").strip() == "0":
        state = "left as is (FASTCNN_MALLOC_TUNING=0)"
    elif platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        state = "left as is (not glibc)"
    else:
        try:
            libc = ctypes.CDLL(None)
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            state = "left as is (mallopt not found)"
        else:
            mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
            ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and \
                mallopt(_M_TRIM_THRESHOLD, _trim) == 1
            _libc = libc if ok else None
            _mallinfo = _mallinfo_call(libc) if ok else None
            state = _describe() if ok else "left as is (mallopt refused)"
    return state


def _describe():
    return (f"glibc mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold "
            f"{_trim >> 20} MiB" + (" (a training step's heap)" if _trim > TRIM_THRESHOLD
                                    else ""))


def _mallinfo_type(field):
    names = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
             "uordblks", "fordblks", "keepcost")
    return type("mallinfo", (ctypes.Structure,), {"_fields_": [(n, field) for n in names]})


def _mallinfo_call(libc):
    """glibc's mallinfo2 (mallinfo, with int fields, before glibc 2.33), its
    result type set: the arena field is the bytes its arenas hold."""
    call = getattr(libc, "mallinfo2", None)
    if call is None:
        call = libc.mallinfo
        call.restype = _mallinfo_type(ctypes.c_int)
    else:
        call.restype = _mallinfo_type(ctypes.c_size_t)
    return call


@contextlib.contextmanager
def held():
    """Within: freed heap memory stays mapped. After: the trim threshold is
    at least the heap's size, so repeating the same work faults nothing in.
    A plain block when the thresholds were not applied."""
    global state, _trim
    if _libc is None:
        yield
        return
    _libc.mallopt(_M_TRIM_THRESHOLD, _INT_MAX)
    try:
        yield
    finally:
        _trim = max(_trim, min(_mallinfo().arena, _INT_MAX))
        _libc.mallopt(_M_TRIM_THRESHOLD, _trim)
        state = _describe()
