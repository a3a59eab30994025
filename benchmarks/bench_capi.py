"""The 'capi' suite of `python -m fastcnn bench`: the C-API's cost per call
against the kernel alone and the Python API (tiny convolution).

    python benchmarks/bench_capi.py [--threads 1,2] [--json PATH]
"""
import sys

from fastcnn.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--suite", "capi", "--compare", "none"] + sys.argv[1:]))
