"""The 'norm' suite of `python -m fastcnn bench`, side by side with the rivals.

    python benchmarks/bench_norm.py [--threads 1,2] [--compare torch,onnxruntime] [--json PATH]
"""
import sys

from fastcnn.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--suite", "norm"] + sys.argv[1:]))
