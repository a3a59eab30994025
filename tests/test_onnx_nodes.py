"""The onnx package's own node test cases (tests/onnx_node_cases.py) through
fastcnn.onnx: at least 95 % of the fixed denominator pass, and every case that
does not is listed here with its reason (a case that starts passing must
leave the list)."""
import pytest

pytest.importorskip("onnx", reason="the node cases ship with onnx")
import onnx_node_cases as cases  # noqa: E402

KNOWN_FAILURES = {}     # name -> why it fails (none today)


@pytest.fixture(scope="module")
def fixed_results():
    return cases.results(cases.FIXED_OPERATORS)


def test_the_fixed_denominator(fixed_results):
    failed = {name: why for name, why in fixed_results.items() if why}
    unexplained = {name: why for name, why in failed.items() if name not in KNOWN_FAILURES}
    assert not unexplained, "\n".join(f"{k}: {v}" for k, v in sorted(unexplained.items()))
    stale = sorted(set(KNOWN_FAILURES) & set(fixed_results) - set(failed))
    assert not stale, f"these pass now: take them off KNOWN_FAILURES: {stale}"
    passed = len(fixed_results) - len(failed)
    assert len(fixed_results) > 450 and passed >= 0.95 * len(fixed_results), \
        (passed, len(fixed_results))


def test_every_declared_operator():
    failed = {name: why for name, why in cases.results().items() if why}
    assert not failed, "\n".join(f"{k}: {v}" for k, v in sorted(failed.items()))
