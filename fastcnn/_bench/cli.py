"""`python -m fastcnn bench`: machine limits, then the suites, side by side with rivals."""
import argparse
import datetime
import importlib.util
import json
import os
import sys

import numpy as np

import fastcnn
from fastcnn._bench import machine, report
from fastcnn._bench.core import run_cases
from fastcnn._bench.rivals import available

SUITES = {}
REQUIRES = {"onnx": ("onnx",)}          # suites that need optional packages


def _load_suites():
    if not SUITES:
        from fastcnn._bench import capi, conv, layers, nets, onnx_models
        SUITES["conv"] = conv.cases
        SUITES["nets"] = nets.cases
        SUITES["onnx"] = onnx_models.cases
        SUITES["capi"] = capi.cases
        SUITES["pool"] = lambda quick=False: layers._pool_cases()
        SUITES["activation"] = lambda quick=False: layers.activation_cases()
        SUITES["linear"] = lambda quick=False: layers.linear_cases()
        SUITES["norm"] = lambda quick=False: layers.norm_cases()
    return SUITES


def _int_list(text, what):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be comma-separated integers, got {text!r}")
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{what} must be positive integers, got {text!r}")
    return values


def add_arguments(p):
    suites = ",".join(_load_suites())
    p.add_argument("--suite", default="all", help=f"comma-separated suites ({suites}) or 'all'")
    p.add_argument("--threads", type=lambda s: _int_list(s, "--threads"), default=None,
                   help="comma-separated thread counts (default: 1 and the core count)")
    p.add_argument("--batch", type=lambda s: _int_list(s, "--batch"), default=[1, 8],
                   help="comma-separated batch sizes (default 1,8)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--repeat", type=int, default=7, help="measurements per contender (default 7)")
    p.add_argument("--quick", action="store_true",
                   help="a short run: fewer shapes, fewer repeats, batch 1 only")
    p.add_argument("--compare", default="torch,onnxruntime,openvino",
                   help="comma-separated rivals to run side by side (torch, onnxruntime, "
                        "openvino), or 'none'")
    p.add_argument("--json", metavar="PATH", help="write every figure and the configuration")


def run(args):
    suites = _load_suites()
    names = list(suites) if args.suite == "all" else [s.strip() for s in args.suite.split(",")]
    unknown = [n for n in names if n not in suites]
    if unknown:
        sys.exit(f"fastcnn bench: unknown suite {', '.join(unknown)}; choose from "
                 f"{', '.join(suites)} or all")
    if args.repeat < 1:
        sys.exit("fastcnn bench: --repeat must be at least 1")
    threads = args.threads or sorted({1, os.cpu_count() or 1})
    batches = [1] if args.quick and args.batch == [1, 8] else args.batch
    repeat = min(args.repeat, 3) if args.quick else args.repeat
    wanted = [] if args.compare in ("", "none") else [r.strip() for r in args.compare.split(",")]
    try:
        rivals, missing = available(wanted)
    except ValueError as exc:
        sys.exit(f"fastcnn bench: {exc}")
    dtype = np.dtype(args.dtype)

    print(f"# fastcnn {fastcnn.__version__} benchmark, "
          f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}")
    print(f"command: python -m fastcnn bench {' '.join(sys.argv[2:])}".rstrip())
    for m in missing:
        print(f"note: rival {m} is not installed; its columns are left out")
    print("\n## Machine limits (measured now)\n")
    limits = machine.limits(threads, quick=args.quick)
    print(report.limits_table(limits))
    all_rows = []
    for name in names:
        need = [m for m in REQUIRES.get(name, ()) if importlib.util.find_spec(m) is None]
        if need:
            print(f"\n## {name}\n\nskipped: needs {', '.join(need)} (pip install \"fastcnn[bench]\")")
            continue
        cases = suites[name](quick=args.quick)
        rows = run_cases(name, cases, threads, batches, dtype, rivals, limits, repeat,
                         min_time=0.02 if args.quick else 0.05)
        all_rows += rows
        print(f"\n## {name}\n")
        print(report.table(rows, rivals))
        print()
        print(report.summary(rows, rivals))
    if args.json:
        from threadpoolctl import threadpool_info
        from fastcnn._config import config
        record = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                  "argv": sys.argv[1:], "limits": {str(k): v for k, v in limits.items()},
                  "rows": all_rows, "config": config(), "threadpool_info": threadpool_info(),
                  "rivals": rivals, "missing_rivals": missing}
        with open(args.json, "w") as fh:
            json.dump(record, fh, indent=1, default=str)
        print(f"\nwrote {args.json}")
    return all_rows
