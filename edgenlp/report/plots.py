"""Figures for the HTML report, each returned as a base64 PNG so the page needs no network or files."""

from __future__ import annotations

import base64
import io

MB = 1e6


def _figure(width: float = 6.4, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, plt.figure(figsize=(width, height), dpi=100)


def _encode(plt, fig) -> str:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _mark(ax, name: str, x: float, y: float, front: set, selection: dict, points: list) -> None:
    """Label a variant's point, collect it if it is on the Pareto front, star it if it was selected."""
    ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
    if name in front:
        points.append((x, y))
    if name == selection.get("selected"):
        ax.plot([x], [y], marker="*", markersize=18, color="gold", markeredgecolor="black", zorder=5, label="selected")


def _front_line(ax, points: list, step: bool) -> None:
    if len(points) > 1:
        xs, ys = zip(*sorted(points))
        if step:
            ax.step(xs, ys, where="post", linestyle="--", color="grey", label="Pareto front")
        else:
            ax.plot(xs, ys, linestyle="--", color="grey", label="Pareto front")


def accuracy_vs_latency(results: dict) -> str:
    """Accuracy against p50 latency (primary profile, real lengths), Pareto front joined, choice starred."""
    profile = results["profiles"][0]["name"]
    selection = results.get("selection") or {}
    front = set(selection.get("pareto_front", []))
    plt, fig = _figure()
    ax = fig.add_subplot(111)
    points = []
    for v in results["variants"]:
        x, y = v["latency_ms"][profile]["real"]["p50"], 100 * v["metrics"]["accuracy"]
        lo, hi = v["latency_ms"][profile]["real"]["p50_ci"]
        alo, ahi = (100 * a for a in v["metrics"]["accuracy_ci"])
        ax.errorbar(
            x,
            y,
            xerr=[[x - lo], [hi - x]],
            yerr=[[y - alo], [ahi - y]],
            fmt="o",
            markersize=4 + 10 * v["size_bytes"] / max(w["size_bytes"] for w in results["variants"]),
            capsize=3,
        )
        _mark(ax, v["name"], x, y, front, selection, points)
    _front_line(ax, points, step=True)
    ax.set_xlabel(f"p50 latency, ms ({profile}, batch 1, real lengths)")
    ax.set_ylabel("accuracy, % (bootstrap 95% CI)")
    ax.set_title("Accuracy against latency (marker size: model size)")
    if points or selection.get("selected"):
        ax.legend(loc="lower right", fontsize=8)
    return _encode(plt, fig)


def quality_vs_speed(results: dict) -> str:
    """The task's quality against its speed metric (primary profile), Pareto front joined, choice starred."""
    from ..bench.results import metric, task_of

    task = task_of(results)
    selection = results.get("selection") or {}
    front = set(selection.get("pareto_front", []))
    plt, fig = _figure()
    ax = fig.add_subplot(111)
    points = []
    biggest = max(w["size_bytes"] for w in results["variants"])
    for v in results["variants"]:
        x, y = metric(results, v, task.SPEED[0]), metric(results, v, task.QUALITY.metric)
        ax.plot([x], [y], "o", markersize=4 + 10 * v["size_bytes"] / biggest)
        _mark(ax, v["name"], x, y, front, selection, points)
    _front_line(ax, points, step=False)
    ax.set_xlabel(f"{task.SPEED[0]} ({results['profiles'][0]['name']})")
    ax.set_ylabel(
        task.QUALITY.label + (" (higher is better)" if task.QUALITY.higher_is_better else " (lower is better)")
    )
    ax.set_title(f"{task.QUALITY.label} against speed (marker size: model size)")
    if points or selection.get("selected"):
        ax.legend(fontsize=8)
    return _encode(plt, fig)


def quality_vs_size(results: dict) -> str | None:
    """Pruned runs only: the task's quality against size on disk, each point labelled with its parameters."""
    from ..bench.results import task_of
    from . import pruning

    rows = pruning.rows(results)
    if not rows:
        return None
    task = task_of(results)
    plt, fig = _figure()
    ax = fig.add_subplot(111)
    for r in rows:
        ax.plot(
            [r["size_mb"]],
            [r["quality"]],
            "o" if r["pruned_by"] else "s",
            color="#c44e52" if r["pruned_by"] else "#4c72b0",
        )
        ax.annotate(
            f"{r['name']} ({(r['parameters'] or 0) / 1e6:.1f}M)",
            (r["size_mb"], r["quality"]),
            fontsize=7,
            xytext=(4, 3),
            textcoords="offset points",
        )
    ax.set_xlabel("size on disk, MB")
    ax.set_ylabel(task.QUALITY.label)
    ax.set_title("Quality against size (red: pruned lineage; label: parameters)")
    return _encode(plt, fig)


def sizes(results: dict) -> str:
    plt, fig = _figure(6.4, 0.6 + 0.45 * len(results["variants"]))
    ax = fig.add_subplot(111)
    names = [v["name"] for v in results["variants"]]
    values = [v["size_bytes"] / MB for v in results["variants"]]
    bars = ax.barh(names, values, color="#4c72b0")
    ax.bar_label(bars, labels=[f"{x:.1f} MB" for x in values], fontsize=8, padding=3)
    ax.invert_yaxis()
    ax.set_xlabel("size on disk, MB")
    ax.set_xlim(0, max(values) * 1.25)
    return _encode(plt, fig)


def _flat(samples: list) -> list[float]:
    """Timings of every round in one list (results/2 keeps them per round, results/1 flat)."""
    return [x for r in samples for x in (r if isinstance(r, list) else [r])]


def latency_distributions(results: dict) -> str:
    profiles = results["profiles"]
    shapes = sorted(
        {shape for v in results["variants"] for p in v["latency_samples_ms"].values() for shape in p},
        key=lambda s: (s != "real", s),
    )
    plt, fig = _figure(4.2 * len(shapes), 2.6 * len(profiles) + 0.6)
    names = [v["name"] for v in results["variants"]]
    for i, profile in enumerate(profiles):
        for j, shape in enumerate(shapes):
            ax = fig.add_subplot(len(profiles), len(shapes), i * len(shapes) + j + 1)
            data = [
                _flat(v["latency_samples_ms"].get(profile["name"], {}).get(shape, [])) or [0.0]
                for v in results["variants"]
            ]
            ax.boxplot(data, vert=False, showfliers=True, flierprops={"markersize": 2})
            ax.set_yticks(range(1, len(names) + 1), names, fontsize=7)
            ax.set_xscale("log")
            ax.set_title(f"{profile['name']} / {shape}", fontsize=9)
            ax.set_xlabel("ms (log scale)", fontsize=8)
    return _encode(plt, fig)


def _per_variant(results: dict, cell_width: float):
    """A figure with one panel per variant, three to a row: yields (plt, fig, [(axes, variant)])."""
    variants = results["variants"]
    cols = min(3, len(variants))
    rows = (len(variants) + cols - 1) // cols
    plt, fig = _figure(cell_width * cols, 3.0 * rows)
    return plt, fig, [(fig.add_subplot(rows, cols, k + 1), v) for k, v in enumerate(variants)]


def confusion_matrices(results: dict) -> str:
    labels = results["eval"]["labels"]
    plt, fig, panels = _per_variant(results, 3.4)
    for ax, v in panels:
        matrix = v["metrics"]["confusion_matrix"]
        ax.imshow(matrix, cmap="Blues")
        top = max(max(row) for row in matrix) or 1
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                ax.text(
                    j,
                    i,
                    str(count),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if count > top / 2 else "black",
                )
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_title(v["name"], fontsize=9)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
    return _encode(plt, fig)


def pr_curves(results: dict) -> str:
    labels = results["eval"]["labels"]
    plt, fig, panels = _per_variant(results, 3.6)
    for ax, v in panels:
        for curve in v["metrics"].get("pr_curves", []):
            ax.plot(
                curve["recall"],
                curve["precision"],
                label=f"{labels[curve['class']]} (AP {curve['average_precision']:.3f})",
            )
        ax.set_title(v["name"], fontsize=9)
        ax.set_xlabel("recall", fontsize=7)
        ax.set_ylabel("precision", fontsize=7)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=6, loc="lower left")
    return _encode(plt, fig)


def reliability_diagrams(results: dict) -> str | None:
    """Per variant: accuracy against confidence in each bin (the diagonal is perfect calibration)."""
    if not any("calibration" in v["metrics"] for v in results["variants"]):
        return None
    plt, fig, panels = _per_variant(results, 3.4)
    for ax, v in panels:
        cal = v["metrics"].get("calibration")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
        if cal:
            filled = [b for b in cal["bins"] if b["count"]]
            ax.bar(
                [(b["lower"] + b["upper"]) / 2 for b in filled],
                [b["accuracy"] for b in filled],
                width=[b["upper"] - b["lower"] for b in filled],
                edgecolor="black",
                alpha=0.7,
                label="accuracy",
            )
            ax.plot(
                [b["confidence"] for b in filled],
                [b["accuracy"] for b in filled],
                marker="o",
                color="tab:red",
                markersize=3,
                linewidth=0.8,
                label="mean confidence",
            )
            ax.set_title(f"{v['name']}: ECE {100 * cal['ece']:.2f}%", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top label)", fontsize=7)
        ax.set_ylabel("accuracy", fontsize=7)
        ax.legend(fontsize=6, loc="upper left")
    return _encode(plt, fig)


def training_curves(results: dict) -> str | None:
    logs = results.get("training") or {}
    if not logs:
        return None
    plt, fig = _figure(6.4 * len(logs), 3.6)
    for k, (name, log) in enumerate(logs.items()):
        ax = fig.add_subplot(1, len(logs), k + 1)
        steps = [s["step"] for s in log["steps"]]
        ax.plot(steps, [s["loss"] for s in log["steps"]], linewidth=0.6, alpha=0.5, label="train loss (per step)")
        evals = log.get("evals", [])
        ax.plot([e["step"] for e in evals], [e["loss"] for e in evals], marker="o", label="validation loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        twin = ax.twinx()
        twin.plot(
            [e["step"] for e in evals],
            [e[log.get("metric", "accuracy")] for e in evals],
            marker="s",
            color="green",
            label=f"validation {log.get('metric', 'accuracy')}",
        )
        twin.set_ylabel(log.get("metric", "accuracy"))
        ax.set_title(f"{name}: best step {log.get('best_step')}", fontsize=9)
        lines = ax.get_legend_handles_labels()
        more = twin.get_legend_handles_labels()
        ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="center right")
    return _encode(plt, fig)


def sensitivity_ranking(results: dict, shown: int = 20) -> str | None:
    """Per analysed base and mode: the most damaging nodes when quantised alone (KL from FP32, log scale)."""
    from .search import sensitivity_rows

    panels = sensitivity_rows(results)
    if not panels:
        return None
    plt, fig = _figure(6.4 * min(len(panels), 2), 0.28 * shown + 1.2)
    for i, panel in enumerate(panels[:2]):
        ax = fig.add_subplot(1, min(len(panels), 2), i + 1)
        rows = panel["rows"][:shown][::-1]
        names = [r["node"].replace("/bert/encoder/", "").replace("/transformer/", "")[-38:] for r in rows]
        ax.barh(range(len(rows)), [max(r["kl_mean"], 1e-12) for r in rows], color="tab:red")
        ax.set_yticks(range(len(rows)), names, fontsize=6)
        ax.set_xscale("log")
        ax.set_xlabel("KL divergence from FP32 (node quantised alone)")
        ax.set_title(f"{panel['base']}, {panel['mode']}", fontsize=9)
    return _encode(plt, fig)
