"""Where each concept is in a WebUI prompt at each sampling step (host-free).

A WebUI prompt may hold several AND sub-prompts (each its own conditioning row, "part"), each with a
prompt-editing schedule (`[cat:dog:0.5]`, `[cat|dog]`: a list of (end_at_step, text) entries, chosen per step
the way the WebUI's reconstruct_multicond_batch does), each text of one or more 77-token chunks. The plan maps
the concepts in every (image, part, entry) once, then answers per step: which concepts each image has, in which
part, at which key positions. A concept is taken from the first sub-prompt that holds it at that step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from .tokens import ConceptTokens, PromptTokens, map_concepts


@dataclass(frozen=True)
class Scheduled:
    """One prompt-editing schedule entry of a sub-prompt: used while step <= end_at_step."""

    end_at_step: int
    tokens: PromptTokens


def entry_at(schedule: Sequence[Scheduled], step: int) -> int:
    """Index of the entry the WebUI uses at `step` (0-based; the first entry if none matches, as it does)."""
    return next((i for i, e in enumerate(schedule) if step <= e.end_at_step), 0)


@dataclass
class _Mapped:
    keys: tuple[int, ...]
    concepts: dict[str, ConceptTokens]  # word -> positions in this entry


class PromptPlan:
    """Concept positions of a batch of prompts, per step; `warnings` names every concept that cannot be used."""

    def __init__(self, images: Sequence[Sequence[Sequence[Scheduled]]], concepts: Sequence[str],
                 encode: Callable[[str], list[int]], decode: Callable[[list[int]], str] | None = None) -> None:
        """images: per image, per AND sub-prompt, its schedule."""
        self.words = list(concepts)
        self.images = [[list(part) for part in parts] for parts in images]
        self.warnings: list[str] = []
        self.found_any = False  # some concept is in some image at some step
        self._mapped: list[list[list[_Mapped]]] = []
        for image, parts in enumerate(self.images):
            reasons: dict[str, str] = {}
            mapped = []
            for p, schedule in enumerate(parts):
                part_mapped = []
                for entry in schedule:
                    found, warnings = map_concepts(entry.tokens, self.words, encode, decode)
                    got = {c.word for c in found}
                    for word, why in zip([w for w in self.words if w not in got], warnings, strict=True):
                        reasons.setdefault(word, why)
                    part_mapped.append(_Mapped(entry.tokens.real_positions,
                                               {c.word: replace(c, part=p) for c in found}))
                mapped.append(part_mapped)
            self._mapped.append(mapped)
            total = max((s[-1].end_at_step for s in parts if s), default=1)
            present: dict[str, list[int]] = {word: [] for word in self.words}  # word -> the steps it is used at
            for step in range(total):
                for c in self._at(image, step):
                    present[c.word].append(step)
            for word, steps in present.items():
                self.found_any = self.found_any or bool(steps)
                if not steps:
                    self._warn(reasons.get(word) or f"'{word}' is not in the prompt")
                elif len(steps) < total:
                    self._warn(f"'{word}' is in the prompt only at steps {_ranges(steps)} of {total} (prompt "
                               "editing); refined there")

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def key(self, step: int) -> tuple:
        """Identifies the entries in use at `step` (unchanged key: unchanged positions)."""
        return tuple(tuple(entry_at(s, step) for s in parts) for parts in self.images)

    def _entries(self, image: int, step: int) -> list[_Mapped]:
        return [self._mapped[image][p][entry_at(s, step)] for p, s in enumerate(self.images[image])]

    def _at(self, image: int, step: int) -> list[ConceptTokens]:
        """The concepts image `image` has at `step`, in the user's order, each from the first part holding it."""
        entries = self._entries(image, step)
        hits = (next((m.concepts[w] for m in entries if w in m.concepts), None) for w in self.words)
        return [c for c in hits if c is not None]

    def at_step(self, step: int) -> tuple[list[list[ConceptTokens]], list]:
        """(concepts per image, keys per image) at `step`: keys is the real-token key positions, or a mapping
        sub-prompt -> positions when a concept comes from a later sub-prompt."""
        concepts, keys = [], []
        for image in range(len(self.images)):
            entries, chosen = self._entries(image, step), self._at(image, step)
            used = sorted({c.part for c in chosen})
            concepts.append(chosen)
            keys.append(entries[0].keys if used in ([], [0]) else {p: entries[p].keys for p in used})
        return concepts, keys


def _ranges(steps: Sequence[int]) -> str:
    """1-based step ranges: [0, 1, 2, 5] -> '1-3, 6'."""
    out, start = [], None
    for i, s in enumerate(steps):
        if start is None:
            start = s
        if i + 1 == len(steps) or steps[i + 1] != s + 1:
            out.append(f"{start + 1}-{s + 1}" if s > start else f"{s + 1}")
            start = None
    return ", ".join(out)
