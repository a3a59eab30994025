"""Instruction-set targets: the choice (on simulated CPUs), the cap (environment
and fastcnn.set_max_isa), what is reported, and that every target the machine
runs computes the same results within the op's tolerance, for eager calls,
compiled plans and the C-API's table alike."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from fastcnn import _kernels, nn
from fastcnn._kernels import _isa

from _reference import activation, adaptive_pool_nd, conv_nd, group_norm, linear, pool_nd, softmax
from conftest import assert_close

X86 = _isa.X86_TARGETS
V3 = set(X86["avx2"]["features"])
V4 = set(X86["avx512"]["features"])
ALL = ("baseline", "avx2", "avx512")
RUNNABLE = [t for t in ALL if t in _kernels.BUILT
            and not _isa.missing_features(_kernels.TABLE, t, _kernels.FEATURES)]
DEFAULT = _kernels.isa


@pytest.fixture
def restore_isa():
    yield
    _kernels.bind(DEFAULT, source="test", strict=True)


# ------------------------------------------------------------ the choice, simulated

@pytest.mark.parametrize("features, want", [
    (V4, "avx512"),                                   # Skylake-SP, Ice Lake, Zen 4
    (V3, "avx2"),                                     # Haswell, Zen 1-3
    (V4 - {"os_zmm"}, "avx2"),                        # AVX-512 CPU, OS not saving ZMM state
    (V3 - {"os_ymm"}, "baseline"),                    # AVX2 CPU, OS not saving YMM state
    (V3 - {"fma"}, "baseline"),                       # AVX2 without FMA (some VIA, emulators)
    ({"sse2", "sse4_2", "avx"}, "baseline"),          # Sandy Bridge
    ({"sse2"}, "baseline"),
    (set(), "baseline"),
])
def test_best_target_for_simulated_cpus(features, want):
    name, reason = _isa.choose(X86, ALL, features)
    assert name == want
    assert reason == "the best target this CPU supports"


def test_cap_chooses_and_explains():
    assert _isa.choose(X86, ALL, V4, "avx2") == ("avx2", "capped to avx2 (best supported: avx512)")
    assert _isa.choose(X86, ALL, V4, "baseline")[0] == "baseline"
    name, reason = _isa.choose(X86, ALL, V3, "avx512")
    assert name == "avx2"
    assert "capped to avx512, which cannot run here (lacks avx512bw avx512cd avx512dq " \
           "avx512f avx512vl os_zmm); using avx2" == reason
    name, reason = _isa.choose(X86, ("baseline", "avx2"), V4, "avx512")   # not built
    assert name == "avx2" and "not built in this install" in reason
    with pytest.raises(ValueError, match="expected one of baseline, avx2, avx512, got 'sse9'"):
        _isa.choose(X86, ALL, V4, "sse9")


def test_other_architectures_and_native_builds():
    assert _isa.build_targets("aarch64") == [("baseline", [])]
    assert [t for t, _ in _isa.build_targets("x86_64")] == list(ALL)
    assert _isa.choose(_isa.PORTABLE_TARGETS, ("baseline",), set())[0] == "baseline"
    assert _isa.choose(X86, ("native",), set(), "avx2")[0] == "native"
    with pytest.raises(RuntimeError, match="holds no kernels"):
        _isa.choose(X86, (), V3)


def test_probe_agrees_with_the_kernel_flags():
    """The cpuid probe against the flags Linux reports (both see the OS's XSAVE state)."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next(line for line in fh if line.startswith("flags")).split(":")[1].split()
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo flags")
    linux = {"avx2": "avx2", "fma": "fma", "avx512f": "avx512f", "avx512bw": "avx512bw",
             "avx512vl": "avx512vl", "bmi2": "bmi2", "movbe": "movbe", "f16c": "f16c"}
    for ours, theirs in linux.items():
        assert (ours in _kernels.FEATURES) == (theirs in flags), ours


def test_probe_finds_avx512_on_256_bit_units():
    """AMD family 19h (Zen 3 and 4) as /proc/cpuinfo reports it."""
    try:
        with open("/proc/cpuinfo") as fh:
            info = dict(line.split(":", 1) for line in fh.read().split("\n\n")[0].splitlines()
                        if ":" in line)
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    info = {k.strip(): v.strip() for k, v in info.items()}
    if "vendor_id" not in info or "cpu family" not in info:
        pytest.skip("no vendor or family in /proc/cpuinfo")
    expected = info["vendor_id"] == "AuthenticAMD" and info["cpu family"] == "25"
    assert _kernels._cpu.avx512_on_256_bit_units() == expected


# ------------------------------------------------------------ the cap, for real

def test_reported_everywhere(capsys):
    assert fastcnn.get_isa() == _kernels.isa in _kernels.BUILT
    assert fastcnn._capi.target() == _kernels.isa
    cfg = fastcnn._config.config()
    assert cfg["isa"] == _kernels.isa and cfg["isa_reason"] == _kernels.isa_reason
    fastcnn.show_config()
    assert f"kernels: {_kernels.isa}: " in capsys.readouterr().out


def test_set_max_isa_errors(restore_isa):
    before = fastcnn.get_isa()
    with pytest.raises(ValueError, match="fastcnn.set_max_isa: expected one of baseline, avx2, "
                                         "avx512, got 'avx3'"):
        fastcnn.set_max_isa("avx3")
    with pytest.raises(TypeError, match="fastcnn.set_max_isa: expected a target name"):
        fastcnn.set_max_isa(2)
    for target in ALL:
        if target not in RUNNABLE:
            with pytest.raises(ValueError, match=f"capped to {target}, which cannot run here"):
                fastcnn.set_max_isa(target)
    assert fastcnn.get_isa() == before            # a refused cap changes nothing


def test_env_cap_above_the_cpu_warns_and_falls_back(restore_isa, monkeypatch):
    monkeypatch.setattr(_kernels, "FEATURES", frozenset({"sse2"}))
    with pytest.warns(RuntimeWarning, match="FASTCNN_MAX_ISA=avx2: capped to avx2, which "
                                            "cannot run here .*; using baseline"):
        assert _kernels.bind("avx2", source=_isa.ENV_CAP, strict=False) == "baseline"
    assert fastcnn._capi.target() == "baseline"


def _run_python(code, **env):
    full = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full, timeout=120)


def test_env_cap_in_a_fresh_process():
    run = _run_python("import fastcnn; print(fastcnn.get_isa(), fastcnn._capi.target())",
                      FASTCNN_MAX_ISA="baseline")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["baseline", "baseline"]
    run = _run_python("import fastcnn", FASTCNN_MAX_ISA="avx-512")
    assert run.returncode != 0
    assert "ValueError: FASTCNN_MAX_ISA: expected one of baseline, avx2, avx512, got " \
           "'avx-512'" in run.stderr


def test_openblas_core_per_target():
    assert _isa.openblas_core(X86, "avx512", V4) == "SkylakeX"
    assert _isa.openblas_core(X86, "avx2", V3) == "Haswell"
    assert _isa.openblas_core(X86, "baseline", V3) == "Nehalem"
    assert _isa.openblas_core(X86, "baseline", {"sse2"}) is None    # lacks SSE4.2: OpenBLAS picks
    assert _isa.openblas_core(X86, "native", V4) is None
    assert _isa.openblas_core(_isa.PORTABLE_TARGETS, "baseline", set()) is None


@pytest.mark.parametrize("target", RUNNABLE[:-1])
def test_env_cap_reaches_openblas(target):
    """Under a cap below the CPU's best target OpenBLAS runs the capped
    target's kernels, unless the user chose its kernels (OPENBLAS_CORETYPE,
    left as the environment has it). (A cap at the best target, which this
    suite's own cap may make a non-default one, caps nothing.)"""
    if _kernels._blas.blas_vendor() != "openblas":
        pytest.skip("SciPy's BLAS is not OpenBLAS")
    run = _run_python("import fastcnn, os; from fastcnn import _kernels as k; "
                      "print(k._blas.blas_core(), os.environ.get('OPENBLAS_CORETYPE')); "
                      "print(k.blas_reason)", FASTCNN_MAX_ISA=target)
    assert run.returncode == 0, run.stderr
    (core, left), reason = run.stdout.splitlines()[0].split(), run.stdout.splitlines()[1]
    user = os.environ.get(_isa.OPENBLAS_ENV)
    assert left == str(user)                      # the variable is not left behind
    if user:
        assert core.lower() == user.lower() and reason == "set by OPENBLAS_CORETYPE"
    else:
        want = _isa.openblas_core(X86, target, _kernels.FEATURES)
        assert core == want and reason == f"capped with the kernels to {target}"
    assert _kernels.blas_reason in ("OpenBLAS's own choice", "set by OPENBLAS_CORETYPE") \
        or _kernels.blas_reason.startswith("capped with the kernels to")


@pytest.mark.parametrize("target", RUNNABLE)
def test_cap_binds_every_layer(target, restore_isa):
    assert fastcnn.set_max_isa(target) == target
    assert fastcnn.get_isa() == target
    for name in (n for n in _isa.KERNEL_MODULES if n != "_capi"):   # each conv algorithm too
        module = getattr(_kernels, name)
        assert sys.modules[f"fastcnn._kernels.{name}"] is module
        assert os.sep + target + os.sep in module.__file__
    assert fastcnn._capi.target() == target
    import fastcnn._capi as capi_module           # what import_fastcnn() imports
    assert capi_module.target() == target


# ------------------------------------------------------------ every target computes the same

def _cases(rng):
    """One call per kernel family (each conv algorithm the dispatcher picks on these
    shapes, pooling, activations, norms, linear, softmax) with its oracle and
    reduction length."""
    f = lambda *s: rng.standard_normal(s).astype(np.float32)    # noqa: E731
    x56, w33 = f(1, 13, 17, 15), f(32, 13, 3, 3)
    x64, w64 = f(2, 16, 20, 20), f(32, 16, 3, 3)
    dw, wdw = f(1, 24, 11, 9), f(24, 1, 3, 3)
    stem, wst = f(1, 3, 29, 31), f(16, 3, 7, 7)
    pw, wpw = f(2, 20, 7, 9), f(17, 20, 1, 1)
    act = f(3, 5, 33)
    lin, wl, bl = f(7, 37), f(19, 37), f(19)
    w1d = f(4, 5, 3)
    return {
        "conv 3x3": (lambda: F.conv2d(x56, w33, padding=1),
                     lambda: conv_nd(x56, w33, None, 1, 1), 13 * 9),
        "conv winograd-sized": (lambda: F.conv2d(x64, w64, padding=1),
                                lambda: conv_nd(x64, w64, None, 1, 1), 16 * 9),
        "conv depthwise": (lambda: F.conv2d(dw, wdw, padding=1, groups=24),
                           lambda: conv_nd(dw, wdw, None, 1, 1, groups=24), 9),
        "conv stem 7x7/2": (lambda: F.conv2d(stem, wst, stride=2, padding=3),
                            lambda: conv_nd(stem, wst, None, 2, 3), 3 * 49),
        "conv 1x1": (lambda: F.conv2d(pw, wpw), lambda: conv_nd(pw, wpw), 20),
        "conv1d dilated": (lambda: F.conv1d(act, w1d, dilation=2, padding=2),
                           lambda: conv_nd(act, w1d, None, 1, 2, dilation=2), 15),
        "max_pool2d": (lambda: F.max_pool2d(x64, 3, 2, 1),
                       lambda: pool_nd(x64, 3, 2, 1, mode="max")[0], 1),
        "avg_pool2d": (lambda: F.avg_pool2d(x64, 2), lambda: pool_nd(x64, 2, mode="avg")[0], 4),
        "adaptive_avg_pool2d": (lambda: F.adaptive_avg_pool2d(x56, (3, 2)),
                                lambda: adaptive_pool_nd(x56, (3, 2))[0], 60),
        "gelu": (lambda: F.gelu(act), lambda: activation("gelu", act), 1),
        "silu": (lambda: F.silu(act), lambda: activation("silu", act), 1),
        "tanh": (lambda: F.tanh(act), lambda: activation("tanh", act), 1),
        "softmax": (lambda: F.softmax(act, 1), lambda: softmax(act, 1), 5),
        "group_norm": (lambda: F.group_norm(x64, 4), lambda: group_norm(x64, 4), 1600),
        "linear": (lambda: F.linear(lin, wl, bl), lambda: linear(lin, wl, bl), 37),
    }


@pytest.mark.parametrize("target", RUNNABLE)
def test_every_family_matches_the_reference(target, restore_isa):
    fastcnn.set_max_isa(target)
    for name, (run, oracle, k) in _cases(np.random.default_rng(5)).items():
        if oracle is not None:
            assert_close(run(), oracle(), k)


@pytest.mark.parametrize("target", RUNNABLE)
def test_bit_identical_across_threads_within_a_target(target, restore_isa):
    fastcnn.set_max_isa(target)
    for name, (run, _, _) in _cases(np.random.default_rng(6)).items():
        with fastcnn.threads(1):
            one = run()
        with fastcnn.threads(2):
            two = run()
        np.testing.assert_array_equal(one, two, err_msg=name)


@pytest.mark.skipif(len(RUNNABLE) < 2, reason="this CPU runs one target only")
def test_targets_agree_within_tolerance(restore_isa):
    results = {}
    for target in RUNNABLE:
        fastcnn.set_max_isa(target)
        results[target] = {name: run() for name, (run, _, _)
                           in _cases(np.random.default_rng(7)).items()}
    first, *others = RUNNABLE
    for other in others:
        for name, (_, _, k) in _cases(np.random.default_rng(7)).items():
            assert_close(results[other][name], results[first][name], k)


@pytest.mark.skipif(len(RUNNABLE) < 2, reason="this CPU runs one target only")
def test_plan_keeps_the_target_it_was_compiled_for(restore_isa):
    """Packed weights follow the target's vector width: a plan compiled under one
    target runs its own kernels after the cap changes, with the same bits."""
    model = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(32, 32, 3, padding=1),
                          nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1),   # phases packed
                          nn.ConvTranspose2d(32, 32, 3, padding=1),
                          nn.AdaptiveAvgPool2d(1)).eval()
    x = np.random.default_rng(8).standard_normal((2, 16, 14, 14)).astype(np.float32)
    fastcnn.set_max_isa(RUNNABLE[0])
    plan = fastcnn.compile(model, x.shape)
    before = plan(x).copy()
    fastcnn.set_max_isa(RUNNABLE[-1])
    np.testing.assert_array_equal(plan(x), before)
    later = fastcnn.compile(model, x.shape)         # compiled afterwards: the new target
    assert_close(later(x), before, 16 * 9 + 32 * 9 + 32 * 4 + 32 * 9)
