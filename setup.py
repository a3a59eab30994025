"""Build the Cython kernels with OpenMP and -O3, once per instruction-set target.

Each kernel module is translated by Cython once and its C compiled for every
target of this architecture (fastcnn/_kernels/_isa.py names them: on x86-64 a
portable baseline, AVX2 + FMA and AVX-512), into fastcnn/_kernels/<target>/.
At import fastcnn reads the CPU's features and loads the best target the CPU
runs (FASTCNN_MAX_ISA caps it), so one build runs on every x86-64 CPU.

FASTCNN_MARCH=native builds a single target tuned to the building machine
instead (a machine-local build; it may not run on other CPUs). GEMM is not
compiled here: it runs in SciPy's OpenBLAS, which picks its kernels at run time.
"""
import glob
import os
import platform
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fastcnn", "_kernels"))
import _isa  # noqa: E402  (the one table of targets and their compiler flags)

COMMON_ARGS = ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math",
               # let loops with several output streams vectorise behind runtime alias checks
               "--param", "vect-max-version-for-alias-checks=64",
               # keep short copy loops inline instead of turning them into memcpy calls
               "-fno-tree-loop-distribute-patterns"]
LINK_ARGS = ["-fopenmp"]
DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "embedsignature": True,
}
INCLUDE_DIRS = [numpy.get_include(), "fastcnn/_kernels", "include"]
# The C headers the kernels include: a change to one rebuilds every module.
HEADERS = sorted(glob.glob("fastcnn/_kernels/*.h") + glob.glob("include/*.h"))
MACROS = [("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")]

# Process-wide state and run-time queries: built once, for the baseline, and
# shared by every target (thread settings live in _omp, whichever target runs).
SHARED = {"fastcnn._kernels._omp": "fastcnn/_kernels/_omp.pyx",
          "fastcnn._kernels._blas": "fastcnn/_kernels/_blas.pyx",
          "fastcnn._kernels._cpu": "fastcnn/_kernels/_cpu.pyx"}
# The kernels and the C-API table over them: built once per target.
PER_TARGET = {f"fastcnn._kernels.{name}": f"fastcnn/_kernels/{name}.pyx"
              for name in _isa.KERNEL_MODULES if name != "_capi"}
PER_TARGET["fastcnn._capi"] = "fastcnn/_capi.pyx"


def targets():
    """(name, compiler flags) of each target this build compiles."""
    march = os.environ.get("FASTCNN_MARCH", "")
    if march:
        return [("native", [f"-march={march}"])]
    return _isa.build_targets(platform.machine())


def extension(name, source, flags, depends=()):
    return Extension(name, [source], include_dirs=INCLUDE_DIRS, define_macros=MACROS,
                     extra_compile_args=COMMON_ARGS + flags, extra_link_args=LINK_ARGS,
                     depends=list(depends) + HEADERS)


def write_if_changed(path, text):
    """Write text to path unless it holds it already (keeps timestamps, so
    setuptools does not recompile what has not changed)."""
    if os.path.exists(path):
        with open(path) as fh:
            if fh.read() == text:
                return
    with open(path, "w") as fh:
        fh.write(text)


def target_wrapper(target, module, c_source):
    """A C file in fastcnn/_kernels/<target>/ that includes the module's
    Cython output, so each target gets objects of its own."""
    leaf = module.rsplit(".", 1)[1]
    path = os.path.join("fastcnn", "_kernels", target, leaf + ".c")
    text = f'/* fastcnn build: {module} compiled for the {target} target. */\n' \
           f'#define FCNN_BUILD_TARGET "{target}"\n' \
           f'#include "{os.path.relpath(c_source, os.path.dirname(path))}"\n'
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_if_changed(os.path.join(os.path.dirname(path), "__init__.py"),
                     f'"""fastcnn\'s kernels compiled for the {target} target '
                     f'(written by setup.py)."""\n')
    write_if_changed(path, text)
    return path


# The C header's one copy is include/fastcnn.h; the package carries a copy for
# fastcnn.get_include(), written here at every build.
os.makedirs(os.path.join("fastcnn", "include"), exist_ok=True)
with open(os.path.join("include", "fastcnn.h")) as fh:
    write_if_changed(os.path.join("fastcnn", "include", "fastcnn.h"), fh.read())

build_targets = targets()
shared_flags = build_targets[0][1]    # the most portable target this build has
translated = cythonize([extension(n, s, []) for n, s in {**SHARED, **PER_TARGET}.items()],
                       compiler_directives=DIRECTIVES, nthreads=os.cpu_count() or 1)
by_name = {ext.name: ext.sources[0] for ext in translated}

extensions = [extension(name, by_name[name], shared_flags) for name in SHARED]
for target, flags in build_targets:
    for module in PER_TARGET:
        leaf = module.rsplit(".", 1)[1]
        wrapper = target_wrapper(target, module, by_name[module])
        # the wrapper only includes the Cython output: rebuild when that changes
        extensions.append(extension(f"fastcnn._kernels.{target}.{leaf}", wrapper, flags,
                                    depends=[by_name[module]]))

# Recorded so show_config() can report how the kernels were built.
with open(os.path.join("fastcnn", "_build_info.py"), "w") as fh:
    fh.write('"""Written by setup.py at build time."""\n')
    fh.write(f"COMPILE_ARGS = {COMMON_ARGS!r}\n")
    fh.write(f"TARGETS = {dict(build_targets)!r}\n")
    fh.write(f"CYTHON_DIRECTIVES = {DIRECTIVES!r}\n")
    fh.write(f"PYTHON = {sys.version.split()[0]!r}\n")

setup(ext_modules=extensions,
      options={"build_ext": {"parallel": os.cpu_count() or 1}},
      # every package of the source tree, and the per-target kernel packages made above
      packages=sorted(set(find_packages(include=["fastcnn", "fastcnn.*"])
                          + [f"fastcnn._kernels.{t}" for t, _ in build_targets])))
