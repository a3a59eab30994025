"""The scaling suite: one network's compiled plan (and the rivals') at every
thread count from 1 to the core count; speed-up over one thread and parallel
efficiency (speed-up / threads)."""
from fastcnn import models
from fastcnn._bench.nets import net_case
from fastcnn._bench.report import names_with

DEFAULT_NET = "resnet18"


def case(net=DEFAULT_NET, batch=8):
    if net not in models.REFERENCE_NETWORKS:
        raise ValueError(f"unknown network {net!r}; choose from "
                         f"{', '.join(models.REFERENCE_NETWORKS)}")
    c = net_case(net, batch)
    c.group = "scaling"
    return c


def add_speedups(rows):
    """Each row gets speedup (over the same contender at one thread) and
    efficiency (speedup / threads), for fastcnn and every rival measured."""
    base = {}
    for row in rows:
        if row["threads"] == 1:
            base[row["case"], row["batch"]] = row
    for row in rows:
        first = base.get((row["case"], row["batch"]))
        if first is None:
            continue
        for key in list(row):
            if key.endswith("_best_ms") and key in first:
                name = key[:-len("_best_ms")]
                speedup = first[key] / row[key]
                row[f"{name}_speedup"] = speedup
                row[f"{name}_efficiency"] = speedup / row["threads"]
    return rows


def table(rows):
    names = names_with(rows, "_speedup")
    head = ["net", "batch", "threads"]
    for n in names:
        head += [f"{n} ms", f"{n} speed-up", f"{n} efficiency"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["case"], row["batch"], row["threads"]]
        for n in names:
            if f"{n}_speedup" in row:
                cells += [f"{row[n + '_best_ms']:.3f}", f"{row[n + '_speedup']:.2f}x",
                          f"{100 * row[n + '_efficiency']:.0f}%"]
            else:
                cells += ["-", "-", "-"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)
