"""Text tables (Markdown) of benchmark rows, and the per-group summaries."""
import statistics


def _fmt(v, digits=2):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def contenders(rows, rivals):
    """The other contenders the rows hold: fastcnn variants first (e.g. eager),
    then the rivals, in the order asked."""
    names = []
    for row in rows:
        for key in row:
            if key.endswith("_best_ms") and key != "fastcnn_best_ms":
                name = key[:-len("_best_ms")]
                if name not in names:
                    names.append(name)
    return [n for n in names if n not in rivals] + [r for r in rivals if r in names]


def table(rows, rivals):
    """A Markdown table, one line per row."""
    rivals = contenders(rows, rivals)
    head = ["case", "shape", "batch", "thr", "fastcnn ms (best / median / max)", "rate",
            "% peak"]
    for r in rivals:
        head += [f"{r} ms", f"vs {r}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        rate = (f"{row['gflops']:.1f} GFLOP/s" if "gflops" in row
                else f"{row['gbs']:.1f} GB/s" if "gbs" in row else "-")
        cells = [row["case"], row.get("shape", ""), row["batch"], row["threads"],
                 f"{row['fastcnn_best_ms']:.3f} / {row['fastcnn_median_ms']:.3f} / "
                 f"{row['fastcnn_max_ms']:.3f}",
                 rate, _fmt(row.get("pct_peak"), 0)]
        for r in rivals:
            cells.append(_fmt(row.get(f"{r}_best_ms"), 3))
            ratio = row.get(f"ratio_{r}")
            cells.append(f"{ratio:.2f}x" if ratio is not None else "-")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


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
        peaks = [m["pct_peak"] for m in members if "pct_peak" in m]
        if peaks:
            parts.append(f"median {statistics.median(peaks):.0f}% of peak")
        lines.append(f"- {suite} / {group} / {threads} thread(s): " + "; ".join(parts))
    return "\n".join(lines)


def limits_table(limits):
    first = next(iter(limits.values()))
    n = first.get("sgemm_n", 2048)
    small = first.get("copy_bytes", 0) / 1e6
    big = first.get("copy_dram_bytes", 256 * 2**20) / 2**20
    lines = [f"| threads | sgemm GFLOP/s ({n}^3) | copy GB/s, {small:.1f} MB (the layer tensors) "
             f"| copy GB/s, {big:.0f} MiB |", "|---|---|---|---|"]
    for t, lim in sorted(limits.items()):
        lines.append(f"| {t} | {lim['sgemm_gflops']:.1f} | {lim['copy_gbs']:.1f} | "
                     f"{lim.get('copy_dram_gbs', float('nan')):.1f} |")
    return "\n".join(lines)
