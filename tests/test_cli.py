"""`python -m fastcnn bench | summary | info` end to end (quick, tiny), and
its messages for bad options. Times are not asserted."""
import importlib.util
import json
import subprocess
import sys

import pytest

from fastcnn.__main__ import main


def test_bench_quick_writes_tables_json_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out_json, out_png = tmp_path / "bench.json", tmp_path / "bench.png"
    status = main(["bench", "--quick", "--suite", "pool,capi,scaling,latency", "--net", "lenet5",
                 "--threads", "1,2", "--compare", "none", "--repeat", "2",
                 "--json", str(out_json), "--plot", str(out_png)])
    captured = capsys.readouterr()
    for part in ("## Machine limits", "sgemm GFLOP/s", "## pool", "max_pool2d 3x3/s2/p1",
                 "fastcnn ms (best / median / max)", "## capi", "## scaling",
                 "fastcnn speed-up", "fastcnn efficiency", "## latency",
                 "fastcnn p50 / p99 ms", "plan buffers + workspaces MB"):
        assert part in captured.out, part
    # file notices go to stderr, so `bench > table.md` holds the tables only
    for part in (f"wrote {out_json}", f"wrote {out_png}"):
        assert part in captured.err and part not in captured.out, part
    record = json.loads(out_json.read_text())
    for key in ("date", "command", "limits", "rows", "config", "threadpool_info", "rivals",
                "missing_rivals", "threads", "batches", "dtype", "repeat"):
        assert key in record, key
    assert record["config"]["fastcnn"] and record["config"]["simd"]
    assert {r["suite"] for r in record["rows"]} == {"pool", "capi", "scaling", "latency"}
    pool = [r for r in record["rows"] if r["suite"] == "pool"]
    assert all(r["fastcnn_best_ms"] <= r["fastcnn_median_ms"] <= r["fastcnn_max_ms"] for r in pool)
    assert all("gbs" in r and "pct_peak" in r for r in pool)
    scaling = [r for r in record["rows"] if r["suite"] == "scaling"]
    assert [r["threads"] for r in scaling] == [1, 2]
    assert scaling[0]["fastcnn_speedup"] == 1.0 and "fastcnn_efficiency" in scaling[1]
    latency = [r for r in record["rows"] if r["suite"] == "latency"]
    assert [(r["case"], r["threads"]) for r in latency] == [("lenet5", 1), ("lenet5", 2)]
    for r in latency:
        assert 0 < r["fastcnn_p50_ms"] <= r["fastcnn_p99_ms"] and r["calls"] >= 20
        # weights and buffers are the plan's own; a call allocates no activations
        assert r["plan_weight_bytes"] > 0 and r["plan_buffer_bytes"] > 0
        assert r["call_alloc_bytes"] < 64 * 1024
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert status == 0


def test_missing_rival_is_noted(monkeypatch, capsys):
    import fastcnn._bench.rivals as rivals
    real = rivals.importlib.import_module

    def fake(name):
        if name == "openvino":
            raise ImportError("not here")
        return real(name)
    monkeypatch.setattr(rivals.importlib, "import_module", fake)
    main(["bench", "--quick", "--suite", "capi", "--threads", "1", "--compare", "openvino",
          "--repeat", "1"])
    assert "note: rival openvino is not installed" in capsys.readouterr().out


def test_profile_suite_sums_steps_per_block(tmp_path, capsys):
    """The profile suite: per block, fastcnn's steps (and ONNX Runtime's nodes,
    when it and onnx are installed) summed; the blocks of both sides line up."""
    from fastcnn._bench.profile import block_of
    have_ort = all(importlib.util.find_spec(m) for m in ("onnxruntime", "onnx"))
    out_json = tmp_path / "profile.json"
    main(["bench", "--quick", "--suite", "profile", "--threads", "1", "--repeat", "2",
          "--compare", "onnxruntime" if have_ort else "none", "--json", str(out_json)])
    assert "## profile" in capsys.readouterr().out
    rows = json.loads(out_json.read_text())["rows"]
    ours = {r["block"]: r for r in rows if r["fastcnn_ms"] is not None}
    # LeNet-5's top-level convolutions and pools: rows of their own, or one
    # row where a convolution runs with its max pool as one step
    conv_row = "conv (top level)" if "conv (top level)" in ours else "conv + pooling (top level)"
    assert {conv_row, "linear (top level)"} <= set(ours)
    assert conv_row != "conv (top level)" or "pooling (top level)" in ours
    assert all(r["fastcnn_ms"] > 0 for r in ours.values())
    conv = ours[conv_row]
    assert conv["algorithms"] and 0 < conv["pct_peak"] and not conv["effective_rate"]
    if have_ort:
        assert all(ours[b]["onnxruntime_ms"] > 0 for b in (conv_row, "linear (top level)"))
    # fastcnn's module paths and ONNX Runtime's node names map to the same blocks
    for ours_name, ort_name, op, block in [
            ("layer1.0.conv1", "layer1/0/relu/Relu_7_nchwc", "Conv", "layer1.0"),
            ("features.3.conv.2", "features/3/conv/3/BatchNormalization_36_nchwc", "Conv",
             "features.3"),
            ("classifier.1", "/classifier/1/Gemm_151", "Gemm", "classifier.1"),
            ("conv1", "relu/Relu_3_nchwc", "Conv", "conv (top level)"),
            ("maxpool", "maxpool/MaxPool_4_nchwc", "MaxPool", "pooling (top level)")]:
        assert block_of(ours_name, "conv" if op == "Conv" else
                        {"Gemm": "linear", "MaxPool": "max_pool2d"}[op]) == block
        assert block_of(ort_name, op) == block
    assert block_of("ReorderOutput", "ReorderOutput") == "other (top level)"


def test_profile_suite_merges_blocks_one_step_runs():
    """A chain that takes MobileNetV2's stem as its expansion runs layers of
    features.0 and features.1: both sides sum them into one row."""
    import numpy as np
    import fastcnn
    from fastcnn import _kernels, models
    from fastcnn._bench.profile import _merge, merged_blocks
    model = models.MobileNetV2(num_classes=10, width_mult=0.5).eval()
    plan = fastcnn.compile(model, (1, 3, 64, 64))
    merged = merged_blocks(plan)
    if _kernels._chain.pays(True):
        assert merged == {"features.0": "features.0-1", "features.1": "features.0-1"}
    else:
        assert merged == {}
    assert _merge({"features.0": 1.0, "features.1": 2.0, "features.2": 4.0},
                  {"features.0": "features.0-1", "features.1": "features.0-1"}) \
        == {"features.0-1": 3.0, "features.2": 4.0}
    assert _merge({"a": [1.0, ["x"]], "b": [2.0, ["x", "y"]]}, {"a": "ab", "b": "ab"}) \
        == {"ab": [3.0, ["x", "y"]]}
    assert np.isfinite(plan(np.zeros((1, 3, 64, 64), np.float32))).all()
    # ResNet-18's stem and its max pool run as one step: the top-level conv
    # and pooling rows are one
    plan = fastcnn.compile(models.resnet18(num_classes=10).eval(), (1, 3, 64, 64))
    assert merged_blocks(plan) == {"conv (top level)": "conv + pooling (top level)",
                                   "pooling (top level)": "conv + pooling (top level)"}


@pytest.mark.parametrize("argv,message", [
    (["bench", "--suite", "nope"], "unknown suite 'nope'"),
    (["bench", "--suite", "capi", "--compare", "tensorflow"], "unknown rival tensorflow"),
    (["bench", "--suite", "scaling", "--net", "alexnet"], "unknown network 'alexnet'"),
    (["bench", "--suite", "profile", "--net", "alexnet"], "unknown network 'alexnet'"),
    (["bench", "--repeat", "0"], "--repeat must be at least 1"),
    (["summary", "nope"], "unknown network 'nope'"),
])
def test_bad_options_exit_with_a_message(argv, message):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert message in str(info.value)


@pytest.mark.parametrize("option", [["--threads", "0"], ["--threads", "two"], ["--batch", "-1"]])
def test_bad_numbers_are_usage_errors(option):
    run = subprocess.run([sys.executable, "-m", "fastcnn", "bench", *option],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "must be" in run.stderr and "Traceback" not in run.stderr


def test_summary_and_info(capsys):
    assert main(["summary", "lenet5"]) == 0
    out = capsys.readouterr().out
    assert "conv1" in out and "Total params" in out
    assert main(["summary", "resnet18", "--input-shape", "1,3,64,64"]) == 0
    assert "layer4.1.conv2" in capsys.readouterr().out
    assert main(["info"]) == 0
    assert "fastcnn" in capsys.readouterr().out


def test_limits_never_fall_as_threads_are_added(monkeypatch):
    """A limit measured lower with more threads (the machine was busy) is
    measured again, then raised to the fewer-thread value and flagged."""
    from fastcnn._bench import machine, report
    calls = []

    def fake(value_by_threads):
        def probe(threads, *args):
            calls.append(threads)
            return value_by_threads[threads]
        return probe
    monkeypatch.setattr(machine, "_PROBES", {
        "sgemm_gflops": fake({1: 90.0, 2: 48.0}),         # the busy case of the issue
        "read_gbs": fake({1: 60.0, 2: 70.0}),
        "write_gbs": fake({1: 50.0, 2: 100.0})})
    monkeypatch.setattr(machine, "OtherLoad", _FakeLoad(0.0))
    lim = machine.limits([1, 2], quick=True)
    assert lim[2]["sgemm_gflops"] == 90.0 and lim[2]["floored"] == ["sgemm_gflops"]
    assert lim[2]["read_gbs"] == 70.0 and lim[1]["floored"] == [] and lim[2]["loaded"] == []
    assert calls.count(2) == 3 + machine.RETRIES                # sgemm re-measured
    table = report.limits_table(lim)
    assert "| 2 | 90.0 * | 70.0 | 100.0 |" in table and "the machine was busy" in table
    # measured while other processes ran: measured again, then marked
    calls.clear()
    monkeypatch.setattr(machine, "OtherLoad", _FakeLoad(1.0))
    lim = machine.limits([1], quick=True)
    assert lim[1]["loaded"] == ["sgemm_gflops", "read_gbs", "write_gbs"]
    assert len(calls) == 3 * (1 + machine.RETRIES)
    assert "| 1 | 90.0 ~ | 60.0 ~ | 50.0 ~ |" in report.limits_table(lim)


class _FakeLoad:
    """machine.OtherLoad reporting a fixed load."""

    def __init__(self, cores):
        self.cores_value = cores

    def __call__(self):
        return self

    def __enter__(self):
        self.cores = self.cores_value
        return self

    def __exit__(self, *exc):
        return False


def test_shares_above_the_limit_are_explained():
    from fastcnn._bench import report
    base = {"case": "c", "shape": "", "batch": 1, "threads": 1, "fastcnn_best_ms": 1.0,
            "fastcnn_median_ms": 1.0, "fastcnn_max_ms": 1.0, "gflops": 1.0}
    rows = [dict(base, pct_peak=80.0), dict(base, pct_peak=130.0, effective_rate=True),
            dict(base, pct_peak=240.0), dict(base, pct_peak=50.0, other_load_cores=0.9)]
    text = report.table(rows, [])
    assert "| 80 |" in text and "| 130 w |" in text and "| 240 ! |" in text
    assert "| c ~ |" in text
    for mark in ("w Winograd", "! above the limit", "~ other processes"):
        assert mark in text


def test_other_load_is_measured():
    from fastcnn._bench import machine
    with machine.OtherLoad() as load:
        sum(range(100000))
    assert load.cores is None or load.cores >= 0.0


def test_memory_limits_see_the_suites_tensor():
    from fastcnn._bench import layers, machine
    case = layers.activation_cases(quick=True)[0]
    read, written = case.traffic(machine.QUICK_BATCH)
    assert read == written == machine.tensor_bytes(quick=True)
