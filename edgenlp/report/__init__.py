"""Renderers of `results.json`: they format what the harness measured and compute nothing new."""
