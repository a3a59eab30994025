"""Benchmark machinery behind `python -m fastcnn bench` and benchmarks/."""
