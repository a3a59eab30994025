"""Text tables (Markdown) of benchmark rows, and the per-group summaries."""
import statistics

from fastcnn._bench.machine import BUSY_CORES


def _fmt(v, digits=2):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def names_with(rows, suffix):
    """The contender names of the rows' keys ending in suffix, in first-seen order."""
    names = []
    for row in rows:
        for key in row:
            if key.endswith(suffix) and key[:-len(suffix)] not in names:
                names.append(key[:-len(suffix)])
    return names


def contenders(rows, rivals):
    """The other contenders the rows hold: fastcnn variants first (e.g. eager),
    then the rivals, in the order asked."""
    names = [n for n in names_with(rows, "_best_ms") if n != "fastcnn"]
    return [n for n in names if n not in rivals] + [r for r in rivals if r in names]


def table(rows, rivals):
    """A Markdown table, one line per row."""
    rivals = contenders(rows, rivals)
    head = ["case", "shape", "batch", "thr", "fastcnn ms (best / median / max)", "rate",
            "% peak"]
    for r in rivals:
        head += [f"{r} ms", f"vs {r}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    marks = set()
    for row in rows:
        rate = (f"{row['gflops']:.1f} GFLOP/s" if "gflops" in row
                else f"{row['gbs']:.1f} GB/s" if "gbs" in row else "-")
        pct, mark = _share(row)
        name = row["case"]
        if (row.get("other_load_cores") or 0) >= BUSY_CORES:
            name += " ~"
            marks.add("~")
        marks.add(mark)
        cells = [name, row.get("shape", ""), row["batch"], row["threads"],
                 f"{row['fastcnn_best_ms']:.3f} / {row['fastcnn_median_ms']:.3f} / "
                 f"{row['fastcnn_max_ms']:.3f}",
                 rate, pct]
        for r in rivals:
            cells.append(_fmt(row.get(f"{r}_best_ms"), 3))
            ratio = row.get(f"ratio_{r}")
            cells.append(f"{ratio:.2f}x" if ratio is not None else "-")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += [f"\n{m} {NOTES[m]}" for m in ("w", "!", "~") if m in marks]
    return "\n".join(lines)


NOTES = {
    "w": "Winograd: an effective rate (the direct multiplies counted, fewer done), "
         "which may pass the sgemm peak.",
    "!": "above the limit measured in this run, which therefore understates this machine "
         "(measured while it was busy); the limits table says which were floored.",
    "~": "other processes used a quarter of a core or more while this row was timed, "
         "even after timing it again; its times are less reliable.",
}


def _share(row):
    """The "% peak" cell and its mark (w, !, or "" for a plain share)."""
    pct = row.get("pct_peak")
    if pct is None:
        return "-", ""
    if row.get("effective_rate"):
        return f"{pct:.0f} w", "w"
    if pct > 100:
        return f"{pct:.0f} !", "!"
    return f"{pct:.0f}", ""


def summary(rows, rivals):
    """Median ratio vs each rival per (group, threads), the targets' unit."""
    rivals = contenders(rows, rivals)
    groups = {}
    for row in rows:
        groups.setdefault((row["suite"], row["group"], row["threads"]), []).append(row)
    lines = []
    for (suite, group, threads), members in sorted(groups.items()):
        parts = []
        for r in rivals:
            ratios = [m[f"ratio_{r}"] for m in members if f"ratio_{r}" in m]
            if ratios:
                parts.append(f"median {statistics.median(ratios):.2f}x vs {r} "
                             f"(min {min(ratios):.2f}x, {len(ratios)} rows)")
        peaks = [m["pct_peak"] for m in members
                 if "pct_peak" in m and not m.get("effective_rate")]
        if peaks:
            parts.append(f"median {statistics.median(peaks):.0f}% of peak")
        lines.append(f"- {suite} / {group} / {threads} thread(s): " + "; ".join(parts))
    return "\n".join(lines)


def limits_table(limits):
    first = next(iter(limits.values()))
    n = first["sgemm_n"]
    size = first["nbytes"] / 1e6
    lines = [f"| threads | sgemm GFLOP/s ({n}^3) | read GB/s ({size:.1f} MB) "
             f"| write GB/s ({size:.1f} MB) |", "|---|---|---|---|"]
    marks = set()
    for t, lim in sorted(limits.items()):
        cells = []
        for k in ("sgemm_gflops", "read_gbs", "write_gbs"):
            mark = " *" if k in lim["floored"] else " ~" if k in lim.get("loaded", ()) else ""
            marks.add(mark.strip())
            cells.append(f"{lim[k]:.1f}{mark}")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    if "*" in marks:
        lines.append("\n* measured lower than with fewer threads, again after retrying: the "
                     "machine was busy; the fewer-thread value is used (a lower bound).")
    if "~" in marks:
        lines.append("\n~ other processes used a quarter of a core or more while this limit was "
                     "measured, even after measuring again: it may understate the machine.")
    return "\n".join(lines)
