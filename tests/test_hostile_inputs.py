"""Property-based tests (Hypothesis) of every parser a stranger feeds: whatever arrives, the answer is the
parsed value or edgenlp's one-line error, never another exception (which the CLI would call a bug)."""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgenlp import data, recipe
from edgenlp.bench import profiles
from edgenlp.bundle import build
from edgenlp.errors import BenchError, BundleError, DataError, EdgeNLPError, RecipeError
from edgenlp.runtime import load
from edgenlp.runtime.bundle import check_layout, read_manifest
from edgenlp.serve import ServeSettings, create_app

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
"""Any JSON value (NaN and infinities included: Python's json reads and writes them)."""

QUICK = settings(
    max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)


def _paths(value, prefix=()):
    """Every key path of a nested mapping, for choosing what to replace."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))


def _replace(document: dict, path: tuple, new) -> dict:
    changed = copy.deepcopy(document)
    target = changed
    for key in path[:-1]:
        target = target[key]
    if new is _DELETE:
        target.pop(path[-1], None)
    else:
        target[path[-1]] = new
    return changed


_DELETE = object()


def mutations(document: dict):
    """A document with one of its values replaced by any JSON value, or deleted."""
    paths = list(_paths(document))
    return st.tuples(st.sampled_from(paths), JSON | st.just(_DELETE)).map(lambda pv: _replace(document, *pv))


@pytest.fixture(scope="module")
def bundle(tiny_run, tmp_path_factory) -> Path:
    return build(tiny_run.variants["onnx-int8-dynamic"].path, tmp_path_factory.mktemp("hostile") / "int8")


def test_any_manifest_is_read_or_refused_in_one_line(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"] = dict(list(manifest["files"].items())[:3])  # a short table: more mutations hit it
    work = Path(tempfile.mkdtemp())

    @QUICK
    @given(mutations(manifest))
    def check(changed):
        (work / "manifest.json").write_text(json.dumps(changed))
        try:
            read_manifest(work)
            check_layout(work, changed)
        except BundleError as exc:
            assert "\n" not in str(exc)

    try:
        check()
    finally:
        shutil.rmtree(work)


def test_any_manifest_of_a_real_bundle_loads_or_is_one_bundle_error(bundle):
    work = Path(tempfile.mkdtemp()) / "b"
    shutil.copytree(bundle, work)
    manifest = json.loads((bundle / "manifest.json").read_text())
    small = {
        k: v
        for k, v in manifest.items()
        if k in ("format", "format_version", "task", "engine", "model", "max_length", "labels")
    }

    @settings(max_examples=30, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(mutations(small))
    def check(changed):
        (work / "manifest.json").write_text(json.dumps({**manifest, **changed}))
        try:
            load(work, verify_hashes=False)
        except EdgeNLPError as exc:
            assert "\n" not in str(exc)

    try:
        check()
    finally:
        shutil.rmtree(work.parent)


def test_any_recipe_parses_or_is_one_recipe_error(tiny_recipe):
    @QUICK
    @given(mutations(tiny_recipe))
    def check(changed):
        try:
            recipe.parse(changed)
        except RecipeError as exc:
            assert "\n" not in str(exc)

    check()


def test_any_profile_parses_or_is_one_bench_error():
    base = {"name": "p", "threads": 1, "seq_lengths": ["real", 64], "memory_budget_mb": 256, "prompt_tokens": 16}

    @QUICK
    @given(mutations(base) | JSON.filter(lambda v: isinstance(v, dict)))
    def check(spec):
        try:
            profiles.load(spec)
        except BenchError as exc:
            assert "\n" not in str(exc)

    check()


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json"])
def test_any_data_file_loads_or_is_one_data_error(suffix):
    folder = Path(tempfile.mkdtemp())
    row = st.dictionaries(st.sampled_from(["text", "label", "split", "other"]), JSON, max_size=4)
    as_text = {
        ".csv": lambda rows: "text,label\n" + "\n".join(f"{r.get('text')},{r.get('label')}" for r in rows),
        ".tsv": lambda rows: "text\tlabel\n" + "\n".join(f"{r.get('text')}\t{r.get('label')}" for r in rows),
        ".jsonl": lambda rows: "\n".join(json.dumps(r) for r in rows),
        ".json": lambda rows: json.dumps(rows),
    }[suffix]

    @QUICK
    @given(st.lists(row, max_size=12).map(as_text) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
    def check(content):
        path = folder / f"rows{suffix}"
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
        try:
            data.load(data.DataSpec(source=str(path)))
        except DataError as exc:
            assert "\n" not in str(exc)

    try:
        check()
    finally:
        shutil.rmtree(folder)


def test_any_request_body_is_answered_with_a_documented_status(bundle):
    app = create_app(load(bundle), ServeSettings(max_client_batch_size=4, max_body_bytes=4096))
    with TestClient(app) as client:

        @QUICK
        @given(JSON, st.sampled_from(["/predict", "/generate", "/generate_stream"]))
        def check(body, endpoint):
            response = client.post(endpoint, content=json.dumps(body), headers={"content-type": "application/json"})
            assert response.status_code in (200, 400, 413, 422), response.text
            if response.status_code != 200:
                assert set(response.json()) == {"error", "error_type"}

        check()


def test_any_sampling_a_request_may_ask_for_picks_a_token_or_is_one_input_error():
    """Schemathesis once sent repetition_penalty=5e-324: the penalised scores overflowed to inf and
    inf - inf made the probabilities NaN. Any positive finite setting must pick a token."""
    import warnings

    import numpy as np

    from edgenlp.runtime.errors import InputError
    from edgenlp.runtime.generation import Sampling, pick_token

    positive = st.floats(min_value=0, allow_nan=False, allow_infinity=False, exclude_min=True)

    @QUICK
    @given(
        logits=st.lists(st.floats(min_value=-1e4, max_value=1e4), min_size=2, max_size=16),
        seen=st.lists(st.integers(min_value=0, max_value=15), max_size=8),
        penalty=positive | st.sampled_from([5e-324, 1e-300, 1e300, 1.7e308]),
        temperature=st.just(0.0) | positive | st.sampled_from([5e-324, 1e-3]),
        top_k=st.integers(min_value=0, max_value=20),
        top_p=st.floats(min_value=0, max_value=1, exclude_min=True),
    )
    def check(logits, seen, penalty, temperature, top_k, top_p):
        seen = [i for i in seen if i < len(logits)]
        try:
            sampling = Sampling(temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=penalty, seed=0)
        except InputError:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # an overflow or a NaN would warn before it breaks
            token = pick_token(np.asarray(logits, dtype=np.float32), seen, sampling, np.random.default_rng(0))
        assert 0 <= token < len(logits)

    check()
