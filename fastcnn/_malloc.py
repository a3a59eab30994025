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
mapped for the next call). FASTCNN_MALLOC_TUNING=0 leaves malloc as it is.
"""
import ctypes
import os
import platform

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 64 * 2**20

state = "not applied"


def tune():
    """Apply the thresholds once (glibc only); returns what was done, as text."""
    global state
    if os.environ.get("FASTCNN_MALLOC_TUNING", "1").strip() == "0":
        state = "left as is (FASTCNN_MALLOC_TUNING=0)"
    elif platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        state = "left as is (not glibc)"
    else:
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):
            state = "left as is (mallopt not found)"
        else:
            mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
            ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and \
                mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
            state = (f"glibc mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold "
                     f"{TRIM_THRESHOLD >> 20} MiB" if ok else "left as is (mallopt refused)")
    return state
