"""Command-line options: the few shared ones, and those generated from typed settings.

A stage command's options are its stage Config's fields (`from_settings`): same names, types,
defaults and help (the field's docstring), so an option cannot drift from what a recipe gets. A
bad value is checked by the Config itself and reported naming the option (`app.typed`).
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, Optional, Union, get_args, get_origin

import typer
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from ..tasks import TASK_NAMES

MAX_DROP = typer.Option(
    None, "--max-accuracy-drop", help="Selection: accuracy points a variant may lose against the reference."
)
MAX_LATENCY = typer.Option(None, "--max-latency-ms", help="Selection: p50 ms limit (first profile, real lengths).")
MAX_SIZE = typer.Option(None, "--max-size-mb", help="Selection: size limit in MB.")
TEXT_COLUMN = typer.Option(None, "--text-column", help="Text column of a data file.")
LABEL_COLUMN = typer.Option(None, "--label-column", help="Label column of a data file (the score of sentence pairs).")
PAIR_COLUMN = typer.Option(None, "--pair-column", help="Second sentence column of sentence pairs (embeddings).")
TASK = typer.Option(
    None,
    "--task",
    help=f"{', '.join(TASK_NAMES)} (default: the model's own; a bare encoder given sentence pairs embeds, given "
    "tagged words (CoNLL) tags, given SQuAD-format questions answers, else it is a classifier to train; a language "
    "model becomes a classifier only when asked).",
)
VERBOSE = typer.Option(False, "--verbose", "-v", help="Show details (library logs and warnings).")
TRUST_REMOTE_CODE = typer.Option(
    False,
    "--trust-remote-code",
    help="Let a model folder or hub repository run the "
    "Python code its auto_map names (off: edgenlp runs no code from a model).",
)
FAIL_IF = typer.Option(
    None,
    "--fail-if",
    help="Gate on the selected variant, e.g. 'accuracy_drop>1.0 or p90_ms>20 or size_mb>30'; exit 1 when it holds.",
)
EXECUTOR = typer.Option(
    None,
    "--executor",
    help="local (default), ray (a Ray instance on this machine) or ray:ADDRESS "
    "(a running cluster): where builds, trials and measurements run.",
)


@dataclass
class Settings:
    """Which fields of a settings model become options, and how they are spelled.

    The command receives them as one dict under `key` (only the fields given, so the model's own
    defaults stay the single source of the rest).
    """

    model: type[BaseModel]
    key: str
    only: tuple[str, ...] | None = None
    skip: tuple[str, ...] = ()
    flags: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Field -> option names, where the option is not `--field-name`."""
    defaults: dict[str, Any] = field(default_factory=dict)
    """Field -> the command's default, where it differs from the model's (a field required there)."""
    help: dict[str, str] = field(default_factory=dict)

    def fields(self) -> list[str]:
        names = self.only if self.only is not None else tuple(self.model.model_fields)
        return [n for n in names if n not in self.skip]

    def parameters(self) -> list[inspect.Parameter]:
        out = []
        for name in self.fields():
            info = self.model.model_fields[name]
            annotation = _option_type(info.annotation, f"{self.model.__name__}.{name}")
            default = self.defaults.get(name, ... if info.default is PydanticUndefined else info.default)
            flags = self.flags.get(name, (f"--{name.replace('_', '-')}",))
            option = typer.Option(default, *flags, help=self.help.get(name, _first_line(info.description)))
            out.append(
                inspect.Parameter(
                    _parameter_name(self.key, name),
                    inspect.Parameter.KEYWORD_ONLY,
                    default=option,
                    annotation=annotation,
                )
            )
        return out


def _parameter_name(key: str, name: str) -> str:
    return f"{key}__{name}"


def _first_line(text: str | None) -> str | None:
    return " ".join(text.split()) if text else None


def _option_type(annotation: Any, where: str) -> Any:
    """The field's type as typer reads it: `X | None` as Optional[X]; a nested model is no option."""
    args = get_args(annotation)
    if get_origin(annotation) in (Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return Optional[_option_type(inner[0], where)] if len(inner) == 1 else annotation
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        raise TypeError(f"{where} is a nested settings block, not an option: skip it")
    return annotation


def from_settings(*groups: Settings) -> Callable:
    """Add each group's fields to a command as options; the command gets them as dicts by group key."""

    def wrap(fn: Callable) -> Callable:
        own = [p for p in inspect.signature(fn).parameters.values() if p.name not in {g.key for g in groups}]
        generated = [p for g in groups for p in g.parameters()]

        @wraps(fn)
        def command(**values):
            chosen = {g.key: {name: values.pop(_parameter_name(g.key, name)) for name in g.fields()} for g in groups}
            return fn(**values, **chosen)

        command.__signature__ = inspect.Signature(own + generated)
        return command

    return wrap
