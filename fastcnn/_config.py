"""Build and runtime configuration: show_config(), get_include(), and the
instruction-set target the kernels run (get_isa(), set_max_isa())."""
import os
import platform
import sys

import numpy as np

from fastcnn import _kernels
from fastcnn._kernels import _blas, _omp
from fastcnn import _malloc
from fastcnn._threads import get_num_threads
from fastcnn._version import __version__


def get_include():
    """The folder holding fastcnn.h, for C and C++ extensions using the C-API."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "include")


def get_isa():
    """The instruction-set target of the kernels now bound: 'baseline',
    'avx2' or 'avx512' on x86-64 ('native' for a FASTCNN_MARCH build)."""
    return _kernels.isa


def set_max_isa(isa):
    """Run the best kernels this CPU supports, but no better than `isa`
    ('baseline', 'avx2', 'avx512'; None: no cap, as without FASTCNN_MAX_ISA).

    Takes effect for every call made afterwards, and for plans compiled
    afterwards: a plan compiled before keeps the target it was compiled for
    (its packed weights are laid out for that target's vector width), and a C
    extension keeps the function table it fetched with import_fastcnn().
    Asking for a target this CPU (or this install) cannot run raises
    ValueError. Returns the target now bound.
    """
    return _kernels.bind(isa, source="fastcnn.set_max_isa", strict=True)


def cpu_features():
    """SIMD features of this CPU that matter to fastcnn's kernels and BLAS."""
    wanted = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
              "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [f for f in wanted if f in flags]
    except OSError:
        pass
    return []


def cpu_name():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def config():
    """The configuration as a dict (what show_config prints; used in benchmark records)."""
    try:
        from fastcnn import _build_info
        build = {"compile_args": _build_info.COMPILE_ARGS,
                 "targets": getattr(_build_info, "TARGETS", {}),
                 "cython_directives": _build_info.CYTHON_DIRECTIVES}
    except ImportError:
        build = {}
    from threadpoolctl import threadpool_info
    pools = [{k: v for k, v in info.items() if k in ("user_api", "internal_api", "prefix",
                                                     "filepath", "version", "num_threads",
                                                     "threading_layer", "architecture")}
             for info in threadpool_info()]
    return {
        "fastcnn": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "simd": cpu_features(),
        "isa": _kernels.isa,
        "isa_description": _kernels.describe(),
        "isa_reason": _kernels.isa_reason,
        "isa_built": list(_kernels.BUILT),
        "caches": _kernels.CACHES,
        "conv_working_sets": _kernels._conv.cache_budgets(),
        "conv_dispatch": _kernels._conv.dispatch_facts(),
        "blas_core": _blas.blas_core(),
        "blas_core_reason": _kernels.blas_reason,
        "build": build,
        "openmp_version": _omp.openmp_version(),
        "fastcnn_threads": get_num_threads(),
        "malloc": _malloc.state,
        "blas_vendor": _blas.blas_vendor(),
        "threadpools": pools,
    }


def blas_line():
    """The BLAS behind the GEMMs, its kernel set and whose choice that is."""
    core = f" {_blas.blas_core()}" if _blas.blas_core() else ""
    return f"{_blas.blas_vendor()}{core} ({_kernels.blas_reason})"


def show_config():
    """Print version, build flags, CPU SIMD features, BLAS and OpenMP libraries
    and their thread counts."""
    c = config()
    print(f"fastcnn {c['fastcnn']} (Python {c['python']}, NumPy {c['numpy']})")
    print(f"platform: {c['platform']}")
    print(f"cpu: {c['cpu']} ({c['cpu_count']} logical CPUs)")
    print(f"simd: {' '.join(c['simd']) or 'unknown'}")
    print(f"kernels: {c['isa_description']} ({c['isa_reason']}); "
          f"built: {' '.join(c['isa_built'])}")
    caches = ", ".join(f"{k} {v // 1024} KiB" for k, v in c["caches"].items()) or "unknown"
    print(f"caches per core: {caches}; conv working sets: "
          + ", ".join(f"{k} {v // 1024} KiB" for k, v in c["conv_working_sets"].items()))
    if c["build"]:
        print(f"build: {' '.join(c['build']['compile_args'])}")
        for target, flags in c["build"]["targets"].items():
            print(f"  {target}: {' '.join(flags) or '(compiler defaults)'}")
    print(f"openmp: version {c['openmp_version']}; fastcnn threads: {c['fastcnn_threads']}")
    print(f"malloc: {c['malloc']}")
    print(f"blas: {blas_line()} via scipy.linalg.cython_blas "
          f"(single-threaded inside fastcnn's parallel regions; small-matrix GEMM: "
          f"{'yes' if c['conv_dispatch']['blas_small_gemm'] else 'no'})")
    print("thread pools loaded in this process:")
    for p in c["threadpools"]:
        extra = f" {p.get('threading_layer', '')} {p.get('architecture', '')}".rstrip()
        print(f"  {p['user_api']:7s} {p['internal_api']:9s} {p.get('version') or '':12s} "
              f"threads={p['num_threads']}{extra}  {p['filepath']}")
