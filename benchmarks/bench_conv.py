"""Convolution: ResNet-18 and MobileNetV2 layer shapes, fastcnn vs PyTorch side by side.

    python benchmarks/bench_conv.py [--threads 1,2] [--batch 1,8] [--json PATH]

Same options as `python -m fastcnn bench`; this runs the conv suite only.
"""
import sys

from fastcnn.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--suite", "conv"] + sys.argv[1:]))
