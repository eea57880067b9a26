"""Questions on paragraphs with their answer spans (SQuAD's format): what a reader model trains on.

Sources (`DataSpec.source`):
- `squad11` (the data kit, `EDGENLP_DATA_DIR`): SQuAD v1.1's dev set, the only part that could be had
  offline, carved by article (a hash of the title) into train, validation and test; so the scores are
  not comparable with official SQuAD dev results, and every report says so.
- a SQuAD-format JSON file (`{"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}`): carved
  by article the same way.
- `hub:NAME`: a hub dataset with `question`, `context`, `answers` (`text`, `answer_start`) columns.

Every answer must be its context's text at `answer_start`; one that is not is a one-line error.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from ...data import DataSpec, hub_dataset, kit_file, text_bucket
from ...errors import DataError
from .spec import NAME

KIT = {"squad11": "qa-squad11/dev-v1.1.json"}
NOT_OFFICIAL = (
    "train, validation and test are articles of SQuAD v1.1 dev (no train file could be had offline): the "
    "scores are not comparable with official SQuAD dev results"
)


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    context: str
    answers: tuple[str, ...]
    starts: tuple[int, ...]
    article: str = ""


@dataclass
class QAData:
    name: str
    train: list[Question]
    validation: list[Question]
    test: list[Question]
    notes: list[str] = field(default_factory=list)
    task: str = NAME
    labels: list[str] = field(default_factory=list)
    """No labels: a reader points at spans (the core asks every dataset)."""

    def describe(self) -> dict:
        articles = {s: len({q.article for q in getattr(self, s)}) for s in ("train", "validation", "test")}
        return {
            "name": self.name,
            "notes": self.notes,
            "sizes": {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)},
            "articles": articles,
        }


@dataclass
class EvalSet:
    questions: list[Question]
    name: str = "eval"
    task: str = NAME

    @property
    def texts(self) -> list[str]:
        """Each question followed by its context: the text whose tokens an answer costs."""
        return [f"{q.question} {q.context}" for q in self.questions]


def _checked(item: dict, context: str, origin: str, where: str) -> Question:
    question = item.get("question")
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"{origin} {where}: a question is missing or empty: give every entry a question")
    answers = item.get("answers")
    if not isinstance(answers, list) or not answers:
        raise DataError(f"{origin} {where} ({item.get('id')}): no answers: give each question an answer span")
    texts, starts = [], []
    for answer in answers:
        text, start = (answer.get("text"), answer.get("answer_start")) if isinstance(answer, dict) else (None, None)
        if not isinstance(text, str) or not text or not isinstance(start, int) or isinstance(start, bool):
            raise DataError(
                f"{origin} {where} ({item.get('id')}): an answer needs `text` and an integer `answer_start`"
            )
        if context[start : start + len(text)] != text:
            raise DataError(
                f"{origin} {where} ({item.get('id')}): the answer {text[:40]!r} is not the context's text at "
                f"{start} ({context[start : start + len(text)][:40]!r}): fix answer_start"
            )
        texts.append(text)
        starts.append(start)
    return Question(str(item.get("id", where)), question.strip(), context, tuple(texts), tuple(starts))


def read_squad(raw: bytes, origin: str) -> list[Question]:
    try:
        data = json.loads(raw.decode("utf-8", errors="replace"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{origin} is not valid JSON ({exc.msg}): give a SQuAD-format file") from None
    articles = data.get("data") if isinstance(data, dict) else None
    if not isinstance(articles, list) or not articles:
        raise DataError(f"{origin} has no `data` list of articles: give a SQuAD-format file")
    out = []
    for a, article in enumerate(articles):
        title = str(article.get("title", a)) if isinstance(article, dict) else str(a)
        for p, paragraph in enumerate(article.get("paragraphs", []) if isinstance(article, dict) else []):
            context = paragraph.get("context") if isinstance(paragraph, dict) else None
            if not isinstance(context, str) or not context.strip():
                raise DataError(f"{origin} article {a} paragraph {p}: no context: give every paragraph its text")
            for n, item in enumerate(paragraph.get("qas", [])):
                one = _checked(
                    item if isinstance(item, dict) else {}, context, origin, f"article {a} paragraph {p} question {n}"
                )
                out.append(Question(one.id, one.question, one.context, one.answers, one.starts, title))
    if not out:
        raise DataError(f"{origin} holds no questions: give paragraphs with `qas`")
    return out


def by_article(questions: list[Question], validation: float, test: float) -> dict[str, list[Question]]:
    """Whole articles to train, validation or test, by a hash of the title: no paragraph is in two splits."""
    out: dict[str, list[Question]] = {"train": [], "validation": [], "test": []}
    for q in questions:
        b = text_bucket(q.article)
        out["test" if b < test else "validation" if b < test + validation else "train"].append(q)
    return out


def load_data(spec: DataSpec | str) -> QAData:
    if isinstance(spec, str):
        spec = DataSpec(source=spec)
    source, notes = spec.source.strip(), []
    path = Path(source).expanduser()
    if source in KIT:
        file = kit_file(*KIT[source].split("/"))
        questions = read_squad(file.read_bytes(), str(file))
        notes.append(NOT_OFFICIAL)
    elif source.startswith("hub:"):
        ds = hub_dataset(source[4:])
        questions = []
        for split_name, part in ds.items():
            for n, row in enumerate(part):
                answers = row.get("answers") or {}
                item = {
                    "id": row.get("id", n),
                    "question": row.get("question"),
                    "answers": [
                        {"text": t, "answer_start": s}
                        for t, s in zip(answers.get("text", []), answers.get("answer_start", []))
                    ],
                }
                one = _checked(item, str(row.get("context") or ""), source, f"{split_name} row {n}")
                questions.append(
                    Question(one.id, one.question, one.context, one.answers, one.starts, str(row.get("title", n)))
                )
    elif path.is_file() and path.suffix.lower() == ".json":
        questions = read_squad(path.read_bytes(), str(path))
    else:
        raise DataError(
            f"data '{source}' for {NAME} is neither squad11, nor a SQuAD-format .json file, nor hub:NAME: fix the "
            "name or the path"
        )
    splits = by_article(questions, spec.validation_fraction, spec.test_fraction)
    for name, part in splits.items():
        if not part:
            raise DataError(f"data '{source}' gives no {name} articles: add articles or change the fractions")
    train = _sample(splits["train"], spec.max_train_examples, spec.seed)
    test = _sample(splits["test"], spec.max_test_examples, spec.seed)
    display = source if not path.exists() else path.name
    return QAData(display, train, splits["validation"], test, notes)


def _sample(questions: list[Question], n: int | None, seed: int) -> list[Question]:
    if n is None or n >= len(questions):
        return questions
    return [questions[i] for i in sorted(random.Random(seed).sample(range(len(questions)), n))]


def claims_data(spec: DataSpec | str) -> bool:
    """Questions on paragraphs: `squad11`, or a .json file that opens as SQuAD's format does."""
    if isinstance(spec, str):
        spec = DataSpec(source=spec)
    source = spec.source.strip()
    if source in KIT:
        return True
    path = Path(source).expanduser()
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    with open(path, "rb") as f:
        head = f.read(4096)
    return b'"paragraphs"' in head and b'"data"' in head


def fingerprint(spec: DataSpec | str) -> str:
    if isinstance(spec, str):
        spec = DataSpec(source=spec)
    source = spec.source.strip()
    if source.startswith("hub:"):
        return "hub:" + source[4:]
    file = kit_file(*KIT[source].split("/")) if source in KIT else Path(source).expanduser()
    try:
        return hashlib.sha256(file.read_bytes()).hexdigest()[:32]
    except OSError as exc:
        raise DataError(f"data file {file} cannot be read ({exc.strerror}): fix the path or its permissions") from None


def validation_texts(dataset: QAData, n: int) -> list[str]:
    """Validation questions as the runtime's JSON lines (`{"question", "context"}`): what a new variant's
    answers are compared on."""
    return [json.dumps({"question": q.question, "context": q.context}) for q in _sample(dataset.validation, n, 0)]


def eval_set(dataset: QAData, model_labels) -> EvalSet:
    return EvalSet(dataset.test, f"{dataset.name}/test")


def payload(eval_set: EvalSet, settings) -> dict:
    """The questions (a seeded sample, if the settings cap them) with their contexts and gold answers."""
    order = list(range(len(eval_set.questions)))
    random.Random(settings.seed).shuffle(order)
    if settings.max_eval_examples:
        order = order[: settings.max_eval_examples]
    picked = [eval_set.questions[i] for i in order]
    return {
        "task": NAME,
        "name": eval_set.name,
        "ids": [q.id for q in picked],
        "questions": [{"question": q.question, "context": q.context} for q in picked],
        "answers": [list(q.answers) for q in picked],
        "texts": [f"{q.question} {q.context}" for q in picked],
    }


def tuning_set(dataset: QAData, model_labels, limit: int | None, seed: int = 0, seen=(), minimum: int = 100) -> EvalSet:
    """Validation questions that no training stage picked its checkpoint on (`seen`: those stages' configs)."""
    used: set[str] = set()
    for config in seen:
        if "max_eval_examples" in config:
            used |= {q.id for q in _sample(dataset.validation, config["max_eval_examples"], config.get("seed", 0))}
    pool = [q for q in dataset.validation if q.id not in used]
    if len(pool) < minimum:
        raise DataError(
            f"only {len(pool)} validation questions were not used to pick a training checkpoint, fewer than "
            f"{minimum} for the search's tuning split: lower the training stages' max_eval_examples"
        )
    return EvalSet(_sample(pool, limit, seed), f"{dataset.name}/tuning")


def calibration_batches(dataset: QAData, model_dir, samples: int, batch_size: int, seed: int = 0):
    """`samples` windows of training questions as graph feeds, in batches, streamed."""
    from ...quantization.calibration import check_sample_count, graph_input_names
    from ...runtime import onnx_file
    from ...runtime.answers import MAX_LENGTH, STRIDE, PairWindows

    pairs = PairWindows(Path(model_dir), MAX_LENGTH, STRIDE)
    names = graph_input_names(onnx_file(model_dir))
    windows = []
    for q in _sample(dataset.train, samples, seed):
        windows.append(pairs.windows(q.question, q.context)[0])
    check_sample_count(len(windows), samples, f"the training questions of {dataset.name}")
    windows.sort(key=lambda w: len(w.ids))
    for start in range(0, len(windows), batch_size):
        encoded = pairs.text.pad(windows[start : start + batch_size])
        yield {k: v for k, v in encoded.items() if k in names}
