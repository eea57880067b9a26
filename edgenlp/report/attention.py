"""Attention figures: one heatmap grid per layer (every head), and rollout scores side by side.

Renders only: the maps come from `edgenlp.explain`. `write` puts PNG files and a self-contained
`explain.html` in a folder; `markdown_section` and `rollout_figure` draw what a run's
`results.json` keeps under `attention` (written by `edgenlp explain RUN_DIR`).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from ..fsio import write_bytes_atomic, write_text_atomic
from .plots import _encode, _figure

HEAD_COLUMNS = 6


def _short(tokens: list[str], width: int = 12) -> list[str]:
    return [t if len(t) <= width else t[: width - 1] + "…" for t in tokens]


def layer_figure(maps, layer: int) -> str:
    """Every head of one layer as a heatmap (rows: queries, columns: tokens attended to); base64 PNG."""
    heads = maps.layers[layer]
    n = heads.shape[0]
    cols = min(HEAD_COLUMNS, n)
    rows = -(-n // cols)
    size = max(2.4, 0.16 * len(maps.tokens) + 1.0)
    plt, fig = _figure(size * cols, size * rows + 0.4)
    labels = _short(maps.tokens)
    for h in range(n):
        ax = fig.add_subplot(rows, cols, h + 1)
        ax.imshow(heads[h], cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"head {h}", fontsize=8)
        if len(labels) <= 40:
            ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=5)
            ax.set_yticks(range(len(labels)), labels, fontsize=5)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"layer {layer}: {n} head{'s' if n > 1 else ''} ({maps.source})", fontsize=9)
    return _encode(plt, fig)


def rollout_figure(tokens: list[str], scores: dict[str, list[float]], query_token: str) -> str:
    """Rollout score per token, one bar series per model; base64 PNG."""
    names = list(scores)
    plt, fig = _figure(max(6.4, 0.32 * len(tokens) + 2), 3.6)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(names))
    for k, name in enumerate(names):
        ax.bar([i + k * width for i in range(len(tokens))], scores[name], width=width, label=name)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(tokens))], _short(tokens), rotation=90, fontsize=6)
    ax.set_ylabel(f"rollout from {query_token}")
    ax.legend(fontsize=7)
    return _encode(plt, fig)


def write(out_dir: Path, summary: dict, maps_by_name: dict) -> list[Path]:
    """`out_dir/<model>/layer-<i>.png`, `rollout.png`, `explain.json` and `explain.html`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written, sections = [], []
    for name, maps in maps_by_name.items():
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        images = []
        for layer in range(len(maps.layers)):
            png = layer_figure(maps, layer)
            path = write_bytes_atomic(folder / f"layer-{layer}.png", base64.b64decode(png))
            written.append(path)
            images.append((f"layer {layer}", png))
        sections.append((name, maps, images))
    rollout = rollout_figure(summary["tokens"], summary["rollout"], summary["tokens"][summary["query"]])
    written.append(write_bytes_atomic(out_dir / "rollout.png", base64.b64decode(rollout)))
    written.append(write_text_atomic(out_dir / "explain.json", json.dumps(summary, indent=1)))
    written.append(write_text_atomic(out_dir / "explain.html", _page(summary, rollout, sections)))
    return written


def _page(summary: dict, rollout: str, sections: list) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(name)}</td><td>{e(c['source'])}</td><td>{','.join(map(str, c['heads']))}</td>"
        f"<td>{'-' if c.get('rollout_spearman') is None else c['rollout_spearman']}</td>"
        f"<td>{e(' '.join(c['top_tokens']))}</td></tr>"
        for name, c in summary["models"].items()
    )
    body = [
        f"<h1>Attention: {e(summary['text'][:80])}</h1>",
        f"<p>Rollout read at token <code>{e(summary['tokens'][summary['query']])}</code>; "
        f"reference <code>{e(summary['reference'] or 'none')}</code>. Spearman: rank correlation of the "
        "rollout scores with the reference (1 = the same order of attended tokens).</p>",
        "<table><tr><th>model</th><th>read from</th><th>heads per layer</th><th>rollout Spearman vs reference</th>"
        f"<th>most attended (rollout)</th></tr>{rows}</table>",
        f'<h2>Rollout</h2><img alt="rollout" src="data:image/png;base64,{rollout}">',
    ]
    for name, _maps, images in sections:
        body.append(f"<h2>{e(name)}</h2>")
        body += [
            f'<h3>{e(title)}</h3><img alt="{e(name)} {e(title)}" src="data:image/png;base64,{png}">'
            for title, png in images
        ]
    style = "body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:4px}table{border-collapse:collapse}img{max-width:100%}"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>edgenlp explain</title><style>{style}</style>"
        f"</head><body>{''.join(body)}</body></html>"
    )


def markdown_section(results: dict) -> list[str]:
    att = results.get("attention")
    if not att:
        return []
    lines = [
        "",
        "## Attention: did compression keep what the model attends to?",
        "",
        f'Text: "{att["text"][:120]}"; rollout read at `{att["tokens"][att["query"]]}`, compared with '
        f"`{att['reference']}` (Spearman rank correlation of rollout scores; per-layer Pearson of head-averaged "
        f"maps). Files: `{att['folder']}`.",
        "",
        "| variant | read from | heads per layer | rollout Spearman | layer Pearson (min) | most attended |",
        "|---|---|---|---:|---:|---|",
    ]
    for name, c in att["models"].items():
        finite = [x for x in c.get("layer_pearson") or [] if x is not None]
        layer = min(finite) if finite else None
        lines.append(
            f"| {name} | {c['source']} | {','.join(map(str, c['heads']))} | "
            f"{'-' if c.get('rollout_spearman') is None else c['rollout_spearman']} | "
            f"{'-' if layer is None else layer} | {' '.join(c['top_tokens'])} |"
        )
    for name, why in (att.get("skipped") or {}).items():
        lines.append(f"- `{name}` not explained: {why}")
    return lines


def run_figure(results: dict) -> str | None:
    att = results.get("attention")
    if not att:
        return None
    return rollout_figure(att["tokens"], att["rollout"], att["tokens"][att["query"]])
