"""The hyper-parameter search of a training variant: every trial, the verdict against the defaults,
a plot of the trials and one of the parameter importances. Renders what the training log keeps."""

from __future__ import annotations

from .plots import _encode, _figure


def studies(results: dict) -> dict[str, dict]:
    """Variant name -> its search summary, for the training variants that ran one."""
    return {name: log["search"] for name, log in (results.get("training") or {}).items() if log.get("search")}


def _params(params: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def verdict(found: dict) -> str:
    if found.get("defaults_value") is None:
        return "no trial ran the given settings to the end, so the search is not compared with them"
    better = "beat" if found["beat_defaults"] else "did not beat"
    return (
        f"the best trial ({found['metric']} {found['best_value']:.4g}) {better} the given settings "
        f"({found['defaults_value']:.4g}) on the validation split, under the same trial budget"
    )


def markdown_section(results: dict) -> list[str]:
    lines = []
    for name, found in studies(results).items():
        lines += [
            "",
            f"## Hyper-parameter search: `{name}`",
            "",
            f"{found['trials']} trials ({found['complete']} complete, {found['pruned']} pruned by the median "
            f"rule, {found.get('failed', 0)} failed), TPE sampler, {found['direction']} validation "
            f"{found['metric']}; every trial trains with {_params(found['fixed']) or 'the stage settings'}. "
            f"Trial 0 is the given settings. Verdict: {verdict(found)}. Best: trial {found['best_trial']} "
            f"({_params(found['best_params'])}), whose checkpoint is the variant.",
            "",
        ]
        if found.get("importances"):
            lines.append(
                "Parameter importances (fANOVA): "
                + ", ".join(f"{k} {v:.2f}" for k, v in found["importances"].items())
                + "."
            )
            lines.append("")
        lines += [
            f"| trial | state | {found['metric']} | evaluations | seconds | settings |",
            "|---:|---|---:|---|---:|---|",
        ]
        for t in found["trial_log"]:
            value = "-" if t["value"] is None else f"{t['value']:.4g}"
            evals = " ".join(f"{step}:{v:.3g}" for step, v in t["evals"])
            lines.append(
                f"| {t['number']}{' (given)' if t['defaults'] else ''} | {t['state']} | {value} | {evals} | "
                f"{t['seconds'] if t['seconds'] is not None else '-'} | {_params(t['params'])} |"
            )
    return lines


def figure(results: dict) -> str | None:
    """Per study: the evaluations of every trial (pruned ones dashed) and the parameter importances."""
    found_all = studies(results)
    if not found_all:
        return None
    plt, fig = _figure(12.0, 3.8 * len(found_all))
    for row, (name, found) in enumerate(found_all.items()):
        ax = fig.add_subplot(len(found_all), 2, 2 * row + 1)
        for t in found["trial_log"]:
            if not t["evals"]:
                continue
            steps, values = zip(*t["evals"])
            style = {"linestyle": "--", "alpha": 0.6} if t["state"] == "pruned" else {}
            label = (
                f"trial {t['number']}{' (given)' if t['defaults'] else ''}{' pruned' if t['state'] == 'pruned' else ''}"
            )
            ax.plot(
                steps,
                values,
                marker="o",
                markersize=3,
                linewidth=2.2 if t["number"] == found["best_trial"] else 1,
                label=label,
                **style,
            )
        ax.set_xlabel("training step")
        ax.set_ylabel(f"validation {found['metric']}")
        ax.set_title(f"{name}: trials (best: {found['best_trial']})", fontsize=9)
        ax.legend(fontsize=6, ncol=2)
        ax = fig.add_subplot(len(found_all), 2, 2 * row + 2)
        importances = found.get("importances") or {}
        if importances:
            names = list(importances)[::-1]
            ax.barh(names, [importances[n] for n in names], color="tab:purple")
            ax.set_xlabel("importance (fANOVA)")
        else:
            ax.text(0.5, 0.5, "importances need 3+ complete trials", ha="center", va="center", fontsize=8)
            ax.set_axis_off()
        ax.set_title("parameter importances", fontsize=9)
    return _encode(plt, fig)
