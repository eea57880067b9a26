"""MkDocs hook: every benchmark table on the site is rendered from its results file at build time.

A page asks for a table with a fenced block:

    ```results-table
    file: compare_optimum.json          # under benchmarks/results/
    rows: [summary, variants]           # the mapping whose entries are the rows (keys name them)
    only: [pytorch-fp32, onnx-fp32]     # optional: these rows, in this order
    transpose: true                     # optional: rows become columns
    columns:
      - {head: "accuracy %", key: [accuracy_pct], format: "{:.2f}"}
      - {head: "p50 ms", key: [p50_ms, edge-1t/real], format: "{:.2f}"}
      - {head: "speed-up", key: [speedup_vs_reference, edge-1t/real], format: ratio}
    ```

and gets the table with a line above it naming the file, its command, date, commit and CPU. A key
that the file lacks fails the build (`mkdocs build --strict` in CI), so a page cannot quote a figure
its results file does not hold. `single: NAME`: the mapping at `rows` is one row, named NAME. `format`: a str.format pattern, `ratio` for `[r, [lo, hi]]` (or a
number), `ci` for `{p50, p50_ci}`-style `[value, [lo, hi]]`, `text` as is, `met` / `yesno` for booleans; `optional: true` shows
a missing value as `-` instead of failing. A key that starts with "/" is read from the file's root, with
`{row}` standing for the row's name.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
BLOCK = re.compile(r"^```results-table\n(.*?)^```$", re.S | re.M)


class TableError(ValueError):
    pass


def _get(document, key: list, where: str, root=None, row: str | None = None):
    """`key` inside `document`; a key starting with "/" is read from the file's root instead, with `{row}`
    standing for the row's name (a row's figures kept in two places of one file)."""
    value = document
    if key and key[0] == "/":
        value, key = root, [row if part == "{row}" else part for part in key[1:]]
    for part in key:
        if isinstance(value, dict) and str(part) in value:
            value = value[str(part)]
        elif isinstance(value, list) and isinstance(part, int) and -len(value) <= part < len(value):
            value = value[part]
        else:
            raise KeyError(f"{where}: no {part!r} in {'/'.join(map(str, key))}")
    return value


def _cell(value, fmt: str) -> str:
    if value is None:
        return "-"
    if fmt == "text":
        return str(value)
    if fmt == "met":
        return "met" if value else "missed"
    if fmt == "yesno":
        return "yes" if value else "no"
    if fmt == "ratio":
        if isinstance(value, list):
            ratio, (lo, hi) = value
            return f"{ratio:.2f}x [{lo:.2f}-{hi:.2f}]"
        return f"{value:.2f}x"
    if fmt == "ci":
        number, (lo, hi) = value
        return f"{number:.2f} [{lo:.2f}-{hi:.2f}]"
    return fmt.format(value)


def _provenance(doc: dict, name: str) -> str:
    env = doc.get("environment") or {}
    cpu = env.get("cpu") or {}
    cpu_text = f"{cpu.get('model', '?')}, {cpu.get('isa', '?')}, {cpu.get('logical_cores', '?')} cores"
    return (
        f"*From `benchmarks/results/{name}` (`{doc.get('command', '?')}`, {doc.get('date', '?')}, commit "
        f"{str(doc.get('commit', '?'))[:7]}; {cpu_text}).*"
    )


def render(spec_text: str, where: str = "page") -> str:
    spec = yaml.safe_load(spec_text)
    name = spec["file"]
    path = RESULTS / name
    if not path.is_file():
        raise TableError(f"{where}: results file {path} does not exist")
    doc = json.loads(path.read_text(encoding="utf-8"))
    rows = _get(doc, spec["rows"], f"{where} ({name})")
    if spec.get("single"):  # the mapping is itself the one row
        rows = {spec["single"]: rows}
    names = spec.get("only") or list(rows)
    columns = spec["columns"]
    grid = []
    for row in names:
        if row not in rows:
            raise TableError(f"{where} ({name}): no row {row!r} (rows: {', '.join(rows)})")
        cells = []
        for col in columns:
            try:
                value = _get(rows[row], col["key"], f"{where} ({name}, row {row})", doc, row)
            except KeyError:
                if not col.get("optional"):
                    raise
                value = None
            cells.append(_cell(value, col.get("format", "{}")))
        grid.append(cells)
    label = spec.get("label", "variant")
    if spec.get("transpose"):
        head = [""] + [f"`{n}`" for n in names]
        body = [[col["head"]] + [grid[r][c] for r in range(len(names))] for c, col in enumerate(columns)]
    else:
        head = [label] + [col["head"] for col in columns]
        body = [[f"`{n}`"] + grid[r] for r, n in enumerate(names)]
    lines = [_provenance(doc, name), "", "| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:
    where = getattr(getattr(page, "file", None), "src_path", "page")
    return BLOCK.sub(lambda m: render(m.group(1), where), markdown)
