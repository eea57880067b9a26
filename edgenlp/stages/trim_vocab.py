"""PyTorch encoder -> the same encoder with only the vocabulary its domain uses.

A BERT-family model's token embedding is most of a small model's bytes (MiniLM-L6: 30,522 x 384, about
half its parameters) while one domain's text uses a few thousand of its tokens. This stage keeps the
token ids the training split uses (at least `min_count` times), the special tokens, every single-character piece (`keep_characters`:
a word outside the kept vocabulary is then spelled in pieces the model knows instead of becoming
`[UNK]`), and `margin` more: the most frequent remaining ids in the validation split. The embedding
rows are taken in the old order, and `tokenizer.json` (and `vocab.txt`, `tokenizer_config.json`) get
the same new ids, so any loader of the folder (transformers, tokenizers, transformers.js, edgenlp's
runtime) reads it unchanged. Greedy WordPiece picks the longest piece in the vocabulary, so a text
whose original pieces were all kept is split exactly as before and gets the same outputs; the share
of test-split pieces that were not kept is reported.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from pydantic import Field

from .. import architectures, tasks
from .. import data as data_module
from ..artifact import Artifact, StageOutput
from ..errors import ArtifactError, DataError, RecipeError
from ..trust import pretrained_options
from . import StageConfig

NAME = "trim-vocab"
LIBRARIES = ("torch", "transformers", "tokenizers")
CHECKED_AGAINST_PARENT = False  # texts outside the kept vocabulary are meant to change; the check is in run


class Config(StageConfig):
    min_count: int = Field(1, ge=1)
    """Keep a training-split piece seen at least this often (1: every piece the training split uses)."""
    margin: int = Field(0, ge=0)
    """Ids kept beyond the training split's: the most frequent others in the validation split."""
    keep_characters: bool = True
    """Keep every single-character piece, so that no word falls to [UNK] for want of pieces."""
    data: data_module.DataSpec | None = None
    """The domain's texts (a recipe fills in its own data)."""
    task: str | None = None
    """What the model is for; None: the model's own task."""


def _wordpiece(tokenizer_json, origin: Path) -> dict[str, int]:
    """The WordPiece vocabulary of a model folder's tokenizer.json (a stranger's file: checked, not trusted)."""
    model = tokenizer_json.get("model") if isinstance(tokenizer_json, dict) else None
    if not isinstance(model, dict) or model.get("type") != "WordPiece":
        kind = model.get("type") if isinstance(model, dict) else None
        raise ArtifactError(
            f"trim-vocab rewrites WordPiece vocabularies (BERT family), but {origin} has a "
            f"{kind or 'unknown'} tokenizer: leave this stage out for it"
        )
    vocab = model.get("vocab")
    added = tokenizer_json.get("added_tokens") or []
    if (
        not isinstance(vocab, dict)
        or not all(isinstance(t, str) and type(i) is int for t, i in vocab.items())
        or not isinstance(added, list)
        or not all(isinstance(a, dict) and a.get("id") in vocab.values() for a in added)
    ):
        raise ArtifactError(f"{origin} is not a well-formed WordPiece tokenizer.json: save the tokenizer again")
    return vocab


def _counts(tokenizer, texts: list[str]) -> Counter:
    counts: Counter = Counter()
    for encoding in tokenizer.encode_batch(texts, add_special_tokens=False):
        counts.update(encoding.ids)
    return counts


def kept_ids(vocab: dict[str, int], special: set[int], train: Counter, others: Counter, config: Config) -> list[int]:
    """The old ids to keep, in their old order: special, training-split and character pieces, then the
    `margin` most frequent `others`."""
    characters = {i for token, i in vocab.items() if len(token.removeprefix("##")) == 1}
    frequent = {i for i, n in train.items() if n >= config.min_count}
    keep = set(special) | frequent | (characters if config.keep_characters else set())
    ranked = [i for i, _ in sorted(others.items(), key=lambda kv: (-kv[1], kv[0])) if i not in keep]
    return sorted(keep | set(ranked[: config.margin]))


def rewrite_tokenizer(tokenizer_json: dict, new_id: dict[int, int]) -> dict:
    """`tokenizer.json` with the kept tokens renumbered and the others gone."""
    out = json.loads(json.dumps(tokenizer_json))
    vocab = out["model"]["vocab"]
    out["model"]["vocab"] = {
        token: new_id[i] for token, i in sorted(vocab.items(), key=lambda kv: kv[1]) if i in new_id
    }
    for added in out.get("added_tokens") or []:
        added["id"] = new_id[added["id"]]

    def renumber(node):  # the post-processor's special tokens carry their ids
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "ids" and isinstance(value, list) and all(isinstance(v, int) for v in value):
                    node[key] = [new_id[v] for v in value]
                else:
                    renumber(value)
        elif isinstance(node, list):
            for value in node:
                renumber(value)

    renumber(out.get("post_processor"))
    return out


def run(parent: Artifact, config: Config, workdir: Path) -> StageOutput:
    if parent.format != "pytorch":
        raise ArtifactError(
            f"trim-vocab needs a PyTorch checkpoint, but {parent.path} is {parent.format}: trim before export"
        )
    family = architectures.family_of(parent.config().get("model_type"))
    if family is None or family.name != "bert":
        raise ArtifactError(
            f"trim-vocab supports BERT-family encoders; {parent.path} is a "
            f"'{parent.config().get('model_type')}' model (a decoder's vocabulary is what it can write)"
        )
    if config.data is None:
        raise DataError("trim-vocab keeps the vocabulary of a domain's texts: give data (--data, or the recipe's)")
    source = parent.path / "tokenizer.json"
    if not source.is_file():
        raise ArtifactError(f"{parent.path} has no tokenizer.json: save the model with a fast tokenizer")
    import torch
    import transformers
    from tokenizers import Tokenizer

    task = tasks.resolve(tasks.of_config(parent.config()), config.task, str(parent.path))
    dataset = task.load_data(config.data)
    splits = {name: getattr(dataset, name, None) for name in ("train", "validation", "test")}
    if splits["train"] is None or not hasattr(splits["train"], "texts"):
        raise DataError(f"trim-vocab reads a training split of texts; {config.data.source} has none")
    tokenizer_json = json.loads(source.read_text(encoding="utf-8"))
    vocab = _wordpiece(tokenizer_json, source)
    tokenizer = Tokenizer.from_str(json.dumps(tokenizer_json))
    # added tokens are matched before WordPiece runs: all of them stay, special or not
    special = {t["id"] for t in tokenizer_json.get("added_tokens") or []}
    unk = tokenizer_json["model"].get("unk_token", "[UNK]")
    if unk not in vocab:
        raise ArtifactError(f"{source} names unk_token {unk!r} but has no such token: repair the tokenizer")
    special.add(vocab[unk])
    train = _counts(tokenizer, splits["train"].texts)
    if not train:
        raise DataError(f"the training split of {config.data.source} has no text: give more data")
    validation = _counts(tokenizer, splits["validation"].texts) if splits["validation"] is not None else Counter()
    keep = kept_ids(vocab, special, train, validation, config)
    new_id = {old: new for new, old in enumerate(keep)}
    trimmed_json = rewrite_tokenizer(tokenizer_json, new_id)
    trimmed_tokenizer = Tokenizer.from_str(json.dumps(trimmed_json))
    test_texts = splits["test"].texts if splits["test"] is not None else []
    _refuse_unknown_only(trimmed_tokenizer, test_texts, new_id[vocab[unk]])
    inside = _inside(tokenizer, trimmed_tokenizer, splits, new_id)

    architectures.register()
    auto = getattr(transformers, task.AUTO_MODEL)
    model = auto.from_pretrained(str(parent.path), **pretrained_options(parent.path)).eval()
    with torch.no_grad():
        expected = [_output(model, old) for old, _ in inside]
    table = model.get_input_embeddings()
    rows = torch.tensor(keep)
    trimmed = torch.nn.Embedding(len(keep), table.embedding_dim, padding_idx=None)
    trimmed.weight.data = table.weight.data[rows].clone()
    model.set_input_embeddings(trimmed)
    model.config.vocab_size = len(keep)
    pad = model.config.pad_token_id
    model.config.pad_token_id = new_id.get(pad, new_id[vocab[unk]]) if pad is not None else None
    model.save_pretrained(str(workdir), safe_serialization=True)
    (workdir / "tokenizer.json").write_text(json.dumps(trimmed_json, ensure_ascii=False), encoding="utf-8")
    by_id = sorted(trimmed_json["model"]["vocab"].items(), key=lambda kv: kv[1])
    (workdir / "vocab.txt").write_text("".join(f"{token}\n" for token, _ in by_id), encoding="utf-8")
    _copy_tokenizer_config(parent.path, workdir, new_id)

    test = _counts(tokenizer, test_texts)
    outside = sum(n for i, n in test.items() if i not in new_id)
    _check_inside(workdir, auto, inside, expected)
    embedding_before = table.weight.numel()
    return StageOutput(
        format="pytorch",
        task=task.NAME,
        precision="fp32",
        metadata={
            "vocab_before": len(vocab),
            "vocab_after": len(keep),
            "training_split_pieces": len(train),
            "min_count": config.min_count,
            "characters_kept": config.keep_characters,
            "margin": config.margin,
            "embedding_parameters": {"before": embedding_before, "after": trimmed.weight.numel()},
            "test_pieces_outside": round(outside / max(1, sum(test.values())), 6),
            "test_pieces": sum(test.values()),
        },
    )


def _refuse_unknown_only(tokenizer, texts: list[str], unk_id: int) -> None:
    for encoding, text in zip(tokenizer.encode_batch(texts, add_special_tokens=False), texts):
        if encoding.ids and all(i == unk_id for i in encoding.ids):
            raise RecipeError(
                f"with this vocabulary the test text {text[:60]!r} is nothing but [UNK]: raise margin or "
                "set keep_characters: true"
            )


def _copy_tokenizer_config(source: Path, workdir: Path, new_id: dict[int, int]) -> None:
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if not (source / name).is_file():
            continue
        try:
            content = json.loads((source / name).read_text(encoding="utf-8"))
            decoder = content.get("added_tokens_decoder") if name == "tokenizer_config.json" else None
            if decoder is not None:
                content["added_tokens_decoder"] = {
                    str(new_id[int(i)]): token for i, token in decoder.items() if int(i) in new_id
                }
        except (ValueError, AttributeError, UnicodeDecodeError) as exc:
            raise ArtifactError(
                f"{source / name} is not a readable tokenizer file ({exc}): save the tokenizer again"
            ) from None
        (workdir / name).write_text(json.dumps(content, indent=2, ensure_ascii=False), encoding="utf-8")


def _inside(before, after, splits: dict, new_id: dict[int, int], most: int = 8) -> list[tuple[list, list]]:
    """Up to `most` texts whose pieces were all kept, as (old ids, new ids); the trimmed tokenizer must
    split them exactly as before (greedy WordPiece takes the longest piece, and that one was kept)."""
    inside = []
    for text in (t for split in splits.values() if split is not None for t in split.texts[:64]):
        old, new = before.encode(text), after.encode(text)
        if all(i in new_id for i in old.ids):
            if [new_id[i] for i in old.ids] != new.ids:
                raise RecipeError(f"the trimmed tokenizer splits {text[:40]!r} differently: report this as a bug")
            inside.append((old.ids, new.ids))
            if len(inside) == most:
                break
    return inside


def _check_inside(workdir: Path, auto, inside: list[tuple[list, list]], expected: list) -> None:
    """The saved trimmed model, reloaded, gives the original's outputs on the texts inside its vocabulary."""
    import torch

    if not inside:
        return
    trimmed = auto.from_pretrained(str(workdir), **pretrained_options(workdir)).eval()
    with torch.no_grad():
        for (_, new), reference in zip(inside, expected):
            if (_output(trimmed, new) - reference).abs().max().item() > 1e-4:
                raise RecipeError(
                    "the trimmed model's outputs differ on a text inside its vocabulary: report this as a bug"
                )


def _output(model, ids: list[int]):
    import torch

    from .prune import main_output

    return main_output(model(input_ids=torch.tensor([ids])))
