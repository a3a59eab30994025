"""`fastcnn bench`: machine limits, then the suites, side by side with rivals."""
import argparse
import datetime
import importlib.util
import json
import os
import sys

import numpy as np

import fastcnn
from fastcnn import _config, _kernels
from fastcnn._bench import machine, report
from fastcnn._bench.core import run_cases
from fastcnn._bench.rivals import available, KNOWN

# suite -> (module, function giving its cases, optional packages it needs)
SUITES = {
    "conv": ("conv", "cases", ()),
    "pool": ("layers", "pool_cases", ()),
    "activation": ("layers", "activation_cases", ()),
    "norm": ("layers", "norm_cases", ()),
    "linear": ("layers", "linear_cases", ()),
    "nets": ("nets", "cases", ()),
    "scaling": ("scaling", None, ()),
    "latency": ("latency", None, ()),
    "profile": ("profile", None, ()),
    "onnx": ("onnx_models", "cases", ("onnx",)),
    "capi": ("capi", "cases", ()),
    "denormal": ("denormal", "cases", ()),
}
GROUPS = {
    "layers": ["conv", "pool", "activation", "norm", "linear"],
    "all": ["conv", "pool", "activation", "norm", "linear", "nets", "scaling", "latency",
            "profile", "onnx", "capi", "denormal"],
}


def _int_list(text, what):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be comma-separated integers, got {text!r}")
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{what} must be positive integers, got {text!r}")
    return values


def add_arguments(p):
    names = ", ".join(list(GROUPS) + list(SUITES))
    p.add_argument("--suite", default="all", help=f"comma-separated suites or groups ({names}); "
                                                  f"default all")
    p.add_argument("--threads", type=lambda s: _int_list(s, "--threads"), default=None,
                   help="comma-separated thread counts (default: 1 and the core count)")
    p.add_argument("--batch", type=lambda s: _int_list(s, "--batch"), default=[1, 8],
                   help="comma-separated batch sizes (default 1,8; suites with their own "
                        "batch sizes keep them)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--repeat", type=int, default=7, help="measurements per contender (default 7)")
    p.add_argument("--quick", action="store_true",
                   help="a short run (under a minute): fewer shapes and repeats, batch 1")
    p.add_argument("--net", default=None,
                   help="the network of the scaling and profile suites (default: resnet18 "
                        "for scaling, resnet18 and mobilenet_v2 for profile)")
    p.add_argument("--compare", default="torch,onnxruntime,openvino",
                   help="comma-separated rivals run side by side when installed (torch, "
                        "onnxruntime, openvino), or 'none'")
    p.add_argument("--isa", choices=["baseline", "avx2", "avx512"], default=None,
                   help="cap fastcnn's kernels to this instruction-set target (as "
                        "FASTCNN_MAX_ISA) and the rivals alike (ATEN_CPU_CAPABILITY, "
                        "ONEDNN_MAX_CPU_ISA, set before they load): compare like with like")
    p.add_argument("--json", metavar="PATH", help="write every figure and the configuration")
    p.add_argument("--plot", metavar="PATH.png",
                   help="bar chart of ratios vs the rivals and the thread-scaling chart")


def _suite_names(text):
    names = []
    for part in (t.strip() for t in text.split(",") if t.strip()):
        if part in GROUPS:
            names += [n for n in GROUPS[part] if n not in names]
        elif part in SUITES:
            if part not in names:
                names.append(part)
        else:
            sys.exit(f"fastcnn bench: unknown suite {part!r}; choose from "
                     f"{', '.join(list(GROUPS) + list(SUITES))}")
    if not names:
        sys.exit("fastcnn bench: --suite is empty")
    return names


def _cases(name, quick, net, batch):
    module_name, fn, _ = SUITES[name]
    module = importlib.import_module(f"fastcnn._bench.{module_name}")
    if name == "scaling":
        return [module.case(net or module.DEFAULT_NET, batch)]
    return getattr(module, fn)(quick=quick)


# How each rival is capped to a target; read when the rival loads.
RIVAL_ISA_ENV = {
    "baseline": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
}


def cap_isa(isa):
    """Cap fastcnn now and the rivals before they load (they read these once):
    `fastcnn bench --isa` and the benchmark scripts' --isa."""
    loaded = [m for m in ("torch", "onnxruntime", "openvino") if m in sys.modules]
    if loaded:
        sys.exit(f"fastcnn bench: --isa must be set before {', '.join(loaded)} loads")
    for key, value in RIVAL_ISA_ENV[isa].items():
        os.environ[key] = value
    try:
        fastcnn.set_max_isa(isa)
    except ValueError as exc:
        sys.exit(f"fastcnn bench: --isa {isa}: {exc}")
    best = _kernels._isa.choose(_kernels.TABLE, _kernels.BUILT, _kernels.FEATURES)[0]
    if isa != best and os.environ.get("FASTCNN_MAX_ISA") != isa:
        print(f"note: OpenBLAS runs the kernels it loaded with ({_config.blas_line()}); "
              f"FASTCNN_MAX_ISA={isa} in the environment caps them too")


def script_args(parser):
    """The benchmark scripts' shared options added to their parser (--threads,
    --isa) and parsed; the cap applied and the header line printed. Returns
    (args, thread counts)."""
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--isa", choices=list(RIVAL_ISA_ENV), default=None,
                        help="cap fastcnn and PyTorch to this instruction-set target")
    args = parser.parse_args()
    if args.isa:
        cap_isa(args.isa)
    print(f"CPU: {_config.cpu_name()}, {os.cpu_count()} cores, fastcnn {fastcnn.__version__} "
          f"({fastcnn.get_isa()} kernels; BLAS: {_config.blas_line()})\n")
    return args, [int(t) for t in args.threads.split(",")]


def run(args):
    names = _suite_names(args.suite)
    if args.repeat < 1:
        sys.exit("fastcnn bench: --repeat must be at least 1")
    cores = os.cpu_count() or 1
    threads = args.threads or sorted({1, cores})
    batches = [1] if args.quick and args.batch == [1, 8] else args.batch
    repeat = min(args.repeat, 3) if args.quick else args.repeat
    wanted = [] if args.compare.strip() in ("", "none") else \
        [r.strip() for r in args.compare.split(",") if r.strip()]
    unknown = [r for r in wanted if r not in KNOWN]
    if unknown:
        sys.exit(f"fastcnn bench: unknown rival {', '.join(unknown)}; choose from "
                 f"{', '.join(KNOWN)} or none")
    if args.isa:
        cap_isa(args.isa)
    rivals, missing = available(wanted)
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        sys.exit("fastcnn bench: --plot needs matplotlib: pip install \"fastcnn[bench]\"")
    if ("scaling" in names or "profile" in names) and args.net is not None:
        from fastcnn import models
        if args.net not in models.REFERENCE_NETWORKS:
            sys.exit(f"fastcnn bench: unknown network {args.net!r}; "
                     f"choose from {', '.join(models.REFERENCE_NETWORKS)}")
    dtype = np.dtype(args.dtype)
    command = "fastcnn bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] \
        else "fastcnn bench"
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")

    print(f"# fastcnn {fastcnn.__version__} benchmark, {date}")
    print(f"command: {command.rstrip()}")
    print(f"threads {threads}, batch {batches}, {dtype}, {repeat} measurements per contender "
          f"(best / median / max)")
    print(f"cpu: {_config.cpu_name()}; simd: {' '.join(_config.cpu_features())}")
    print(f"fastcnn kernels: {_kernels.describe()} ({_kernels.isa_reason}); "
          f"BLAS: {_config.blas_line()}")
    for m in missing:
        print(f"note: rival {m} is not installed; its columns are left out")
    print("\n## Machine limits (measured now)\n")
    limit_threads = sorted(set(threads) | (set(range(1, max(threads + [cores]) + 1))
                                           if "scaling" in names else set()))
    limits = machine.limits(limit_threads, quick=args.quick)
    print(report.limits_table(limits))
    all_rows = []
    for name in names:
        need = [m for m in SUITES[name][2] if importlib.util.find_spec(m) is None]
        if need:
            print(f"\n## {name}\n\nskipped: needs {', '.join(need)} "
                  f"(pip install \"fastcnn[bench]\")")
            continue
        suite_threads = list(range(1, max(threads + [cores]) + 1)) if name == "scaling" \
            else threads
        if name == "latency":
            from fastcnn._bench import latency
            rows = latency.run(suite_threads, rivals, repeat, quick=args.quick)
            all_rows += rows
            print(f"\n## latency (batch 1, single calls)\n\n{latency.table(rows)}")
            continue
        if name == "profile":
            from fastcnn._bench import profile
            nets = [args.net] if args.net else list(profile.QUICK if args.quick else profile.NETS)
            rows = profile.run(nets, batches, threads, rivals, repeat, limits)
            all_rows += rows
            print(f"\n## profile (per block, beside ONNX Runtime's own profile)\n\n"
                  f"{profile.table(rows)}")
            continue
        cases = _cases(name, args.quick, args.net, batches[-1])
        rows = run_cases(name, cases, suite_threads, batches, dtype, rivals, limits, repeat,
                         min_time=0.02 if args.quick else 0.05)
        all_rows += rows
        print(f"\n## {name}\n")
        if name == "scaling":
            from fastcnn._bench import scaling
            scaling.add_speedups(rows)
            print(scaling.table(rows))
        else:
            print(report.table(rows, rivals))
            print()
            print(report.summary(rows, rivals))
    if args.json:
        from threadpoolctl import threadpool_info
        from fastcnn._config import config
        record = {"date": date, "command": command, "argv": sys.argv[1:],
                  "threads": threads, "batches": batches, "dtype": dtype.name,
                  "repeat": repeat, "quick": args.quick,
                  "limits": {str(k): v for k, v in limits.items()}, "rows": all_rows,
                  "config": config(), "threadpool_info": threadpool_info(),
                  "rivals": rivals, "missing_rivals": missing}
        with open(args.json, "w") as fh:
            json.dump(record, fh, indent=1, default=str)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        from fastcnn._bench.plot import plot
        try:
            plot(all_rows, args.plot, f"fastcnn {fastcnn.__version__}, {date}: {command}")
            print(f"wrote {args.plot}", file=sys.stderr)
        except RuntimeError as exc:
            print(f"note: {exc}", file=sys.stderr)
    return all_rows
