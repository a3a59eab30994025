"""Build the Cython kernels with OpenMP and -O3.

FASTCNN_MARCH chooses the instruction set the kernels are compiled for: the
default 'native' tunes them to the building machine (right for `pip install .`);
set e.g. FASTCNN_MARCH=x86-64-v3 to build a wheel for other machines. GEMM is
not affected: it runs in SciPy's OpenBLAS, which picks its kernels at run time.
"""
import os
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

march = os.environ.get("FASTCNN_MARCH", "native")
compile_args = ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math",
                # let loops with several output streams vectorise behind runtime alias checks
                "--param", "vect-max-version-for-alias-checks=64",
                # keep short copy loops inline instead of turning them into memcpy calls
                "-fno-tree-loop-distribute-patterns",
                # use the full AVX-512 width where the CPU has it (GCC defaults to 256)
                "-mprefer-vector-width=512"]
if march:
    compile_args.append(f"-march={march}")
link_args = ["-fopenmp"]

directives = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "embedsignature": True,
}

KERNELS = ["_blas", "_omp", "_conv", "_pool", "_act", "_linear", "_norm"]


def extension(name):
    return Extension(
        f"fastcnn._kernels.{name}",
        [f"fastcnn/_kernels/{name}.pyx"],
        include_dirs=[numpy.get_include(), "fastcnn/_kernels"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )


# Recorded so show_config() can report how the kernels were built.
with open(os.path.join("fastcnn", "_build_info.py"), "w") as fh:
    fh.write('"""Written by setup.py at build time."""\n')
    fh.write(f"COMPILE_ARGS = {compile_args!r}\n")
    fh.write(f"CYTHON_DIRECTIVES = {directives!r}\n")
    fh.write(f"PYTHON = {sys.version.split()[0]!r}\n")

# The C-API (include/fastcnn.h) is published by fastcnn._capi.
capi = Extension(
    "fastcnn._capi",
    ["fastcnn/_capi.pyx"],
    include_dirs=[numpy.get_include(), "fastcnn/_kernels", "fastcnn/include"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
    extra_compile_args=compile_args,
    extra_link_args=link_args,
)

setup(
    ext_modules=cythonize(
        [extension(name) for name in KERNELS] + [capi],
        compiler_directives=directives,
        nthreads=os.cpu_count() or 1,
    ),
)
