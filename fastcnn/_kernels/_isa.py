"""The instruction-set targets: the one table the build, the loader and the
reports read.

Each target is a set of compiler flags and the CPU features (as the cpuid
probe in _cpu.pyx names them) that code built with those flags may use. The
build compiles every kernel module once per target of the machine's
architecture; at import the loader binds the best target that the CPU (and
the operating system, which must save the wider registers) supports, capped
by FASTCNN_MAX_ISA or fastcnn.set_isa().

Pure Python with no imports from fastcnn: setup.py reads it before anything
is built.
"""

# Targets from least to most capable. x86-64 levels as GCC and the psABI
# define them: v3 is Haswell / Zen 1 and later, v4 (the AVX-512 subset) is
# Skylake-SP / Zen 4 and later.
X86_TARGETS = {
    "baseline": {
        "flags": ["-march=x86-64", "-mtune=generic"],
        "features": ("sse2",),
        "describe": "x86-64 baseline (SSE2)",
        "openblas_core": ("Nehalem", ("sse4_2",)),
    },
    "avx2": {
        "flags": ["-march=x86-64-v3", "-mtune=generic"],
        "features": ("sse2", "sse4_2", "popcnt", "avx", "avx2", "fma", "f16c", "bmi1", "bmi2",
                     "lzcnt", "movbe", "os_ymm"),
        "describe": "AVX2 + FMA (x86-64-v3)",
        "openblas_core": ("Haswell", ()),
    },
    "avx512": {
        "flags": ["-march=x86-64-v4", "-mtune=generic", "-mprefer-vector-width=512"],
        "features": ("sse2", "sse4_2", "popcnt", "avx", "avx2", "fma", "f16c", "bmi1", "bmi2",
                     "lzcnt", "movbe", "os_ymm", "avx512f", "avx512bw", "avx512cd", "avx512dq",
                     "avx512vl", "os_zmm"),
        "describe": "AVX-512 F/BW/CD/DQ/VL (x86-64-v4)",
        "openblas_core": ("SkylakeX", ()),
    },
}
# "openblas_core": the OpenBLAS kernel set (its OPENBLAS_CORETYPE name) that
# uses no more than the target's instructions, and any CPU features it needs
# beyond the target's. OpenBLAS picks its kernels by the CPU alone, so under a
# FASTCNN_MAX_ISA cap the loader asks it for this set: the cap then reaches
# the GEMMs too, and a capped run measures what that CPU class would run.

# Any other architecture: the portable C path, with the compiler's defaults.
PORTABLE_TARGETS = {
    "baseline": {"flags": [], "features": (), "describe": "portable C (compiler defaults)"},
}
# A machine-local build (FASTCNN_MARCH=native): one target, trusted to run.
NATIVE_TARGET = {"flags": [], "features": (), "describe": "built for the building machine"}

# Compiled once per target; the loader binds them together, in this order:
# a module comes after the ones it cimports (they cimport the shared _omp and
# _blas, _conv cimports the _conv_<algorithm> modules, _capi the kernels).
KERNEL_MODULES = ("_act", "_conv_gemm", "_conv_direct", "_conv_depthwise", "_conv_winograd",
                  "_conv_blocked", "_conv_pointwise", "_conv_blocked_oc", "_conv", "_chain",
                  "_pool", "_linear", "_norm", "_grad", "_capi")

ENV_CAP = "FASTCNN_MAX_ISA"


def is_x86(machine):
    return machine.lower() in ("x86_64", "amd64", "i686", "i386", "x86")


def targets_for(machine):
    """The target table of an architecture (platform.machine())."""
    return X86_TARGETS if is_x86(machine) else PORTABLE_TARGETS


def build_targets(machine):
    """[(name, compiler flags)] the build compiles on this architecture."""
    return [(name, list(t["flags"])) for name, t in targets_for(machine).items()]


def missing_features(table, name, features):
    """The features target `name` needs that `features` lacks (sorted)."""
    return sorted(set(table[name]["features"]) - set(features))


def choose(table, built, features, cap=None):
    """The target to run and why: (name, reason).

    table: the architecture's targets, least capable first; built: the target
    names this install holds; features: the CPU's features; cap: a target
    name or None. The best built target the CPU supports, no better than cap.
    An unknown cap raises ValueError; a cap the CPU cannot run falls back to
    the best it can, and the reason says so.
    """
    if "native" in built:
        return "native", "the only target of this machine-local build (FASTCNN_MARCH)"
    order = [name for name in table if name in built]
    if not order:
        raise RuntimeError(f"fastcnn: this install holds no kernels for this CPU's architecture "
                           f"(built: {', '.join(built) or 'none'}); reinstall fastcnn")
    runnable = [name for name in order if not missing_features(table, name, features)]
    if not runnable:        # the baseline needs nothing a CPU of the architecture lacks
        runnable = order[:1]
    best = runnable[-1]
    if cap is None:
        return best, "the best target this CPU supports"
    if cap not in table:
        raise ValueError(f"expected one of {', '.join(table)}, got {cap!r}")
    ranks = list(table)
    choice = ([name for name in runnable if ranks.index(name) <= ranks.index(cap)]
              or runnable[:1])[-1]
    if choice == cap:
        return cap, f"capped to {cap} (best supported: {best})"
    lacks = missing_features(table, cap, features)
    why = f"lacks {' '.join(lacks)}" if lacks else "not built in this install"
    return choice, f"capped to {cap}, which cannot run here ({why}); using {choice}"


OPENBLAS_ENV = "OPENBLAS_CORETYPE"


def openblas_core(table, name, features):
    """The OpenBLAS kernel set matching target `name` on a CPU with `features`,
    or None (no such target, no set named, or the CPU lacks what it needs)."""
    core, needs = table.get(name, {}).get("openblas_core", (None, ()))
    if core is None or set(needs) - set(features):
        return None
    return core
