"""`--plot PATH.png`: ratios vs each rival (one bar per row) and the thread
scaling of the scaling suite, with matplotlib (pip install "fastcnn[bench]")."""


import textwrap


def plot(rows, path, title):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.ticker
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install \"fastcnn[bench]\"") from None
    from fastcnn._bench.rivals import KNOWN
    rivals = [name for name in KNOWN if any(f"ratio_{name}" in r for r in rows)]
    ratio_rows = [r for r in rows if r["suite"] != "scaling" and
                  any(f"ratio_{name}" in r for name in rivals)]
    scaling = [r for r in rows if r["suite"] == "scaling"]
    panels = (1 if ratio_rows else 0) + (1 if scaling else 0)
    if panels == 0:
        raise RuntimeError("--plot: nothing to plot (no rival ratios, no scaling rows)")
    height = max(3.0, 0.28 * len(ratio_rows) + 1.5) if ratio_rows else 0
    fig, axes = plt.subplots(panels, 1, figsize=(10, height + (4 if scaling else 0)),
                             squeeze=False, gridspec_kw={"height_ratios":
                                                         [h for h in (height, 4) if h][:panels]})
    k = 0
    if ratio_rows:
        ax = axes[k][0]
        k += 1
        labels = [f"{r['suite']}: {r['case']} b{r['batch']} t{r['threads']}" for r in ratio_rows]
        width = 0.8 / max(1, len(rivals))
        for i, rival in enumerate(rivals):
            ys = [j + i * width for j in range(len(ratio_rows))]
            ax.barh(ys, [r.get(f"ratio_{rival}", float("nan")) for r in ratio_rows],
                    height=width, label=f"vs {rival}")
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_yticks([j + 0.4 - width / 2 for j in range(len(ratio_rows))])
        ax.set_yticklabels(labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("rival time / fastcnn time (log scale; > 1: fastcnn faster)")
        ax.legend(fontsize=8)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%gx"))
        ax.set_title(textwrap.fill(title, 110), fontsize=9)
    if scaling:
        ax = axes[k][0]
        names = sorted({key[:-8] for r in scaling for key in r if key.endswith("_speedup")})
        threads = sorted({r["threads"] for r in scaling})
        for name in names:
            pts = [(r["threads"], r[f"{name}_speedup"]) for r in scaling if f"{name}_speedup" in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        ax.plot(threads, threads, linestyle="--", color="grey", label="ideal")
        ax.set_xlabel("threads")
        ax.set_ylabel("speed-up over 1 thread")
        ax.set_xticks(threads)
        ax.legend(fontsize=8)
        ax.set_title(f"thread scaling: {scaling[0]['case']} batch {scaling[0]['batch']}",
                     fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
