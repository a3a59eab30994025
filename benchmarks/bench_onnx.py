"""The 'onnx' suite of `python -m fastcnn bench`: the same .onnx files run by
fastcnn.onnx, ONNX Runtime and OpenVINO (where installed).

    python benchmarks/bench_onnx.py [--threads 1,2] [--compare onnxruntime,openvino] [--json PATH]
"""
import sys

from fastcnn.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--suite", "onnx"] + sys.argv[1:]))
