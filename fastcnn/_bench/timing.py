"""Side-by-side timing: warm up, then alternate contenders round by round so a
noisy neighbour hits all of them alike; report min, median and max."""
import statistics
import time
from dataclasses import dataclass, field


@dataclass
class Timing:
    times: list = field(default_factory=list)

    @property
    def best(self):
        return min(self.times)

    @property
    def median(self):
        return statistics.median(self.times)

    @property
    def worst(self):
        return max(self.times)


def best_of(fn, repeat, pause=0.0):
    """The fastest of `repeat` single calls, after one warm-up call (seconds);
    with `pause`, first sleep that long (see compare: the thread pools of
    whatever ran before stop spinning)."""
    if pause:
        time.sleep(pause)
    fn()
    return min(_once(fn) for _ in range(repeat))


def _once(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def compare(contenders, repeat=5, min_time=0.05, warmup=1, pause=0.05):
    """Time each callable in `contenders` (name -> fn), interleaved.

    Each measurement runs the callable enough times back to back to last at
    least `min_time` seconds (so short ops are not timer noise) and records the
    mean per call; `repeat` such measurements are kept per contender. Before
    each measurement the process sleeps `pause` seconds: thread pools of the
    contender measured before (OpenMP, ONNX Runtime) spin-wait for work for a
    while after a run, and would otherwise take cores from the next one.
    """
    inner = {}
    for name, fn in contenders.items():
        for _ in range(warmup):
            fn()
        t = _once(fn)
        inner[name] = max(1, int(min_time / max(t, 1e-7)))
    results = {name: Timing() for name in contenders}
    for _ in range(repeat):
        for name, fn in contenders.items():
            n = inner[name]
            if pause and len(contenders) > 1:
                time.sleep(pause)
                fn()                    # wake the pools up outside the timed loop
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            results[name].times.append((time.perf_counter() - t0) / n)
    return results


def samples(contenders, calls, rounds, pause=0.05):
    """Single-call times (seconds) of each callable in `contenders`: `calls`
    calls back to back per round, the contenders taking turns round by round
    (as in compare, after a pause and an untimed call that wakes the thread
    pools). Returns name -> list of rounds * calls times, for percentiles."""
    times = {name: [] for name in contenders}
    for fn in contenders.values():
        fn()
    for _ in range(rounds):
        for name, fn in contenders.items():
            if pause and len(contenders) > 1:
                time.sleep(pause)
                fn()
            times[name] += [_once(fn) for _ in range(calls)]
    return times
