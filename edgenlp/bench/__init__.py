"""The benchmark harness: measures any model folder, knowing nothing about how it was made.

Kept import-free on purpose: `python -m edgenlp.bench.worker` must start without torch.
"""
