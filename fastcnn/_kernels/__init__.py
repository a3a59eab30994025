"""Private compiled kernels, and the loader that binds one instruction-set target.

The build compiles the kernel modules (_isa.KERNEL_MODULES) once per target
into fastcnn/_kernels/<target>/; _omp, _blas and _cpu are built once and
shared. At import this package reads the CPU's features (_cpu), chooses the
best target the CPU runs, capped by the FASTCNN_MAX_ISA environment variable,
and binds that target's modules as `fastcnn._kernels._conv`, `._act`, `._pool`,
`._linear`, `._norm` and `fastcnn._capi` (attributes of this package and
entries of sys.modules, so cimports between them resolve to the same target).

The Python layers look kernels up here at call time (`_kernels._conv.forward`),
so `set_max_isa` rebinds every later call; a compiled plan keeps the modules it
was compiled with, since its packed weights are laid out for their vector width.

Users import fastcnn, fastcnn.functional, fastcnn.nn.
"""
import importlib
import importlib.util
import os
import platform
import sys
import threading
import warnings

from fastcnn._kernels import _cpu, _isa, _omp  # noqa: F401  (shared by every target)

TABLE = _isa.targets_for(platform.machine())
FEATURES = _cpu.features()
BUILT = tuple(name for name in (*TABLE, "native")
              if importlib.util.find_spec(f"fastcnn._kernels.{name}") is not None)


def _load_blas(cap):
    """Import _blas, which loads SciPy's OpenBLAS. Under a cap, OpenBLAS is
    asked for the kernel set of the capped target (_isa.openblas_core); it
    reads OPENBLAS_CORETYPE once, when it loads, so the variable is set for
    that moment only, and a value the user set wins. Returns (module, a
    sentence saying whose choice the kernel set is)."""
    cap = (cap or "").strip().lower() or None
    try:
        target = _isa.choose(TABLE, BUILT, FEATURES, cap)[0]
        best = _isa.choose(TABLE, BUILT, FEATURES, None)[0]
    except (ValueError, RuntimeError):
        target = best = None        # bind() reports it
    wanted = _isa.openblas_core(TABLE, target, FEATURES) if target != best else None
    if os.environ.get(_isa.OPENBLAS_ENV) or wanted is None:
        module = importlib.import_module("fastcnn._kernels._blas")
        return module, (f"set by {_isa.OPENBLAS_ENV}" if os.environ.get(_isa.OPENBLAS_ENV)
                        else "OpenBLAS's own choice")
    os.environ[_isa.OPENBLAS_ENV] = wanted
    try:
        module = importlib.import_module("fastcnn._kernels._blas")
    finally:
        del os.environ[_isa.OPENBLAS_ENV]
    if module.blas_vendor() != "openblas" or module.blas_core().lower() == wanted.lower():
        return module, f"capped with the kernels to {target}"
    return module, (f"OpenBLAS's own choice: it was loaded before fastcnn, which would "
                    f"have asked for {wanted} under the {target} cap")


_blas, blas_reason = _load_blas(os.environ.get(_isa.ENV_CAP))


def _read(path):
    with open(path) as fh:
        return fh.read().strip()


def _cache_sizes(base="/sys/devices/system/cpu/cpu0/cache"):
    """{'l1d': bytes, 'l2': bytes} of one core as the OS reports them (Linux's
    sysfs); empty where it does not."""
    units = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}
    sizes = {}
    try:
        for entry in (e for e in os.listdir(base) if e.startswith("index")):
            level, kind, size = (_read(os.path.join(base, entry, f))
                                 for f in ("level", "type", "size"))
            value = int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
            if level == "1" and kind == "Data":
                sizes["l1d"] = value
            elif level == "2" and kind in ("Unified", "Data"):
                sizes["l2"] = value
    except (OSError, ValueError, KeyError):
        return {}
    return sizes


CACHES = _cache_sizes()
isa = None              # the bound target's name
isa_reason = None       # why it was chosen
_lock = threading.Lock()


def _qualified(name):
    return "fastcnn._capi" if name == "_capi" else f"fastcnn._kernels.{name}"


def _install(name, module):
    """Make `module` the one `import fastcnn._kernels.<name>` (or fastcnn._capi) finds."""
    qualified = _qualified(name)
    sys.modules[qualified] = module
    parent, _, leaf = qualified.rpartition(".")
    setattr(sys.modules[parent], leaf, module)


def _bind(target):
    """Import `target`'s kernel modules and make them the ones in use. The
    kernels are installed before _capi is imported, so its cimports bind to
    the same target. On failure the previous binding is restored."""
    previous = {name: sys.modules.get(_qualified(name)) for name in _isa.KERNEL_MODULES}
    try:
        for name in _isa.KERNEL_MODULES:
            _install(name, importlib.import_module(f"fastcnn._kernels.{target}.{name}"))
        conv = sys.modules["fastcnn._kernels._conv"]
        if "l1d" in CACHES and "l2" in CACHES:
            conv.set_cache_sizes(CACHES["l1d"], CACHES["l2"])
        conv.set_blas_small_gemm(_blas.small_gemm())
        conv.set_wide_vectors_full_rate(not _cpu.avx512_on_256_bit_units())
    except BaseException:
        for name, module in previous.items():
            if module is not None:
                _install(name, module)
        raise


def bind(cap=None, source="fastcnn.set_max_isa", strict=True):
    """Bind the best built target the CPU runs, no better than `cap` (a
    target name, or None for no cap); `source` names the caller in messages.
    A cap the CPU cannot run raises ValueError when strict, else falls back
    with a RuntimeWarning. Returns the bound target's name."""
    global isa, isa_reason
    if cap is not None:
        if not isinstance(cap, str):
            raise TypeError(f"{source}: expected a target name ({', '.join(TABLE)}) or None, "
                            f"got {type(cap).__name__}")
        cap = cap.strip().lower() or None
    try:
        target, reason = _isa.choose(TABLE, BUILT, FEATURES, cap)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    if cap is not None and target != cap and "native" not in BUILT:
        if strict:
            raise ValueError(f"{source}: {reason}")
        warnings.warn(f"{source}={cap}: {reason}", RuntimeWarning, stacklevel=2)
    with _lock:
        if target != isa:
            _bind(target)
        isa, isa_reason = target, reason
    return target


def describe(name=None):
    """A line naming a target (the bound one by default)."""
    name = name or isa
    entry = TABLE.get(name, _isa.NATIVE_TARGET)
    return f"{name}: {entry['describe']}"


bind(os.environ.get(_isa.ENV_CAP) or None, source=_isa.ENV_CAP, strict=False)
