"""Sentences as words with one IOB2 tag each: the unit every NER split, sample and file is made of."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Sentences:
    words: list[list[str]] = field(default_factory=list)
    tags: list[list[str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.words)

    def sample(self, n: int | None, seed: int) -> Sentences:
        if n is None or n >= len(self):
            return self
        idx = sorted(random.Random(seed).sample(range(len(self)), n))
        return Sentences([self.words[i] for i in idx], [self.tags[i] for i in idx])

    def texts(self) -> list[str]:
        """Each sentence as text: its words joined by single spaces."""
        return [" ".join(words) for words in self.words]

    def add(self, other: Sentences) -> None:
        self.words += other.words
        self.tags += other.tags
