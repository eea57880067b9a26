"""Prompt-lookup decoding: drafts from the text so far, checked in one step, the same tokens as greedy."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from edgenlp.cli import app
from edgenlp.runtime.errors import InputError
from edgenlp.runtime.generation import CausalLM, PromptLookup, Sampling, decode, decode_prompt_lookup

VOCAB = 11  # the rule below cycles every 10 tokens here


class Rule:
    """A decoder whose next token is a fixed function of the last two (so text repeats, and drafts hit),
    with a cache that records which tokens it holds: trimming it wrong shows up as a wrong next token."""

    def __init__(self):
        self.rows = 0
        self.calls = 0

    @staticmethod
    def next_of(a: int, b: int) -> int:
        return (3 * a + 5 * b + 1) % VOCAB

    def step(self, ids: np.ndarray, past, last_only: bool = False):
        held = list(past or [])
        logits = np.zeros((1, ids.shape[1], VOCAB), dtype=np.float32)
        for i, token in enumerate(ids[0].tolist()):
            held.append(token)
            before = held[-2] if len(held) >= 2 else 0
            logits[0, i, self.next_of(before, held[-1])] = 1.0
        self.rows += ids.shape[1]
        self.calls += 1
        return logits, held

    @staticmethod
    def trim(past, length):
        return past[:length]


def test_propose_takes_the_latest_longest_match_and_respects_the_room():
    lookup = PromptLookup(draft=3, ngram=2)
    # trailing bigram (7, 8) occurs twice; the later occurrence is followed by 4 5 6
    assert lookup.propose([7, 8, 1, 2, 3, 7, 8, 4, 5, 6, 9, 7, 8], room=10) == [4, 5, 6]
    assert lookup.propose([7, 8, 1, 2, 3, 7, 8, 4, 5, 6, 9, 7, 8], room=2) == [4, 5]
    # no bigram match: the unigram 9 matched, followed by 1
    assert lookup.propose([9, 1, 2, 9], room=5) == [1, 2, 9]
    assert lookup.propose([1, 2, 3], room=5) == []
    assert lookup.propose([1], room=5) == [] and lookup.propose([1, 1], room=0) == []


@pytest.mark.parametrize("draft", [1, 2, 5, 10])
@pytest.mark.parametrize("max_new", [0, 1, 2, 7, 40])
def test_lookup_equals_greedy_on_a_repeating_model_and_saves_steps(draft, max_new):
    prompt = [1, 2, 3, 4, 5, 6]
    plain = list(decode(Rule().step, prompt, max_new))
    model = Rule()
    stats: dict = {}
    fast = list(decode_prompt_lookup(model.step, Rule.trim, prompt, max_new, PromptLookup(draft), stats=stats))
    assert fast == plain and len(fast) == max_new
    if max_new == 40:  # the rule's output cycles, so the drafts after the first cycle are right
        assert stats["accepted"] > 0 and stats["steps"] < max_new
        assert stats["steps"] + stats["accepted"] == max_new


def test_lookup_stops_at_the_end_token_even_inside_an_accepted_draft():
    prompt = [1, 2, 3, 4, 5, 6]
    plain = list(decode(Rule().step, prompt, 60))
    eos = plain[30]  # a token that first appears late in the plain output ends both
    stop = plain.index(eos) + 1
    fast = list(decode_prompt_lookup(Rule().step, Rule.trim, prompt, 60, PromptLookup(8), eos_id=eos))
    assert fast == list(decode(Rule().step, prompt, 60, eos_id=eos)) == plain[:stop]


def test_lookup_with_a_repetition_penalty_equals_greedy_with_it():
    prompt = [1, 2, 3, 4, 5, 6, 1, 2]
    sampling = Sampling(repetition_penalty=1.3)
    plain = list(decode(Rule().step, prompt, 30, sampling))
    fast = list(decode_prompt_lookup(Rule().step, Rule.trim, prompt, 30, PromptLookup(4), sampling))
    assert fast == plain


def test_lookup_refuses_sampling_and_bad_settings():
    with pytest.raises(InputError, match="temperature 0"):
        list(decode_prompt_lookup(Rule().step, Rule.trim, [1, 2], 4, PromptLookup(), Sampling(temperature=0.7)))
    for bad in (0, -1, True, 2.5):
        with pytest.raises(InputError, match="positive"):
            PromptLookup(draft=bad)
    for bad in (-3, "ten", 1.5, True):
        with pytest.raises(InputError, match="number of draft tokens"):
            PromptLookup.of(bad)
    assert PromptLookup.of(0) is None and PromptLookup.of(None) is None and PromptLookup.of(4).draft == 4


def _repetitive_prompts(model) -> list[list[int]]:
    text = "the movie was great and the acting was good. the movie was"
    ids = model.encode(text)
    return [ids, ids[:5] + ids, model.encode("good acting. good acting. good")]


def test_onnx_fp32_lookup_gives_the_greedy_tokens(tiny_gpt2_run):
    """On the exported FP32 decoder, drafting cuts the real KV cache back and still matches greedy."""
    model = CausalLM(tiny_gpt2_run.variants["onnx-fp32"].path)
    for prompt in _repetitive_prompts(model):
        room = min(24, model.context - len(prompt))
        plain = list(decode(model.step, prompt, room, eos_id=model.eos_id))
        stats: dict = {}
        fast = list(
            decode_prompt_lookup(
                model.step, model.trim_past, prompt, room, PromptLookup(4, 2), eos_id=model.eos_id, stats=stats
            )
        )
        assert fast == plain
        assert stats["steps"] <= len(plain)


def test_generate_with_prompt_lookup_through_the_text_api_and_pytorch(tiny_gpt2_run):
    from edgenlp.bench.runners import PytorchCausalLM

    for model in (
        CausalLM(tiny_gpt2_run.variants["onnx-fp32"].path),
        PytorchCausalLM(tiny_gpt2_run.variants["pytorch-fp32"].path, 1),
    ):
        prompt = "the movie was great and the acting was good. the movie was"
        plain = model.generate(prompt, max_new_tokens=16)
        fast = model.generate(prompt, max_new_tokens=16, prompt_lookup=PromptLookup(5))
        assert fast.token_ids == plain.token_ids and fast.text == plain.text


def test_cli_generate_prompt_lookup(tiny_gpt2_run):
    variant = str(tiny_gpt2_run.variants["onnx-fp32"].path)
    runner = CliRunner()
    plain = runner.invoke(app, ["generate", variant, "the movie was great", "-n", "12"])
    fast = runner.invoke(app, ["generate", variant, "the movie was great", "-n", "12", "--prompt-lookup", "6"])
    assert plain.exit_code == 0 and fast.exit_code == 0, fast.output
    assert fast.output == plain.output
    sampled = runner.invoke(
        app,
        [
            "generate",
            variant,
            "the movie was",
            "-n",
            "8",
            "--prompt-lookup",
            "6",
            "--temperature",
            "0.8",
            "--seed",
            "1",
        ],
    )
    assert sampled.exit_code == 2
    assert "temperature 0" in sampled.output and "Traceback" not in sampled.output
