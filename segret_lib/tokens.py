"""Map concept words/phrases to token positions in the first 77-token CLIP context of a prompt."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

CHUNK_TOKENS = 75  # real tokens per 77-token context (plus start and end)


@dataclass(frozen=True)
class PromptTokens:
    """The first context chunk of a tokenised prompt.

    ids: the 77 ids including start-of-text, end-of-text and padding;
    n_real: how many real prompt tokens follow start-of-text (positions 1..n_real);
    later_ids: real token ids of the following chunks (prompts over 75 tokens), for error messages;
    spans: named positions that have no BPE ids of their own (textual-inversion embeddings: name, positions).
    """

    ids: tuple[int, ...]
    n_real: int
    later_ids: tuple[int, ...] = ()
    spans: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @classmethod
    def from_ids(cls, real_ids: Sequence[int], bos: int, eos: int, pad: int | None = None) -> PromptTokens:
        """Build from a prompt's real token ids (no specials) the way CLIP chunks it."""
        pad = eos if pad is None else pad
        first = list(real_ids[:CHUNK_TOKENS])
        ids = [bos, *first, eos] + [pad] * (CHUNK_TOKENS - len(first))
        return cls(tuple(ids), len(first), tuple(real_ids[CHUNK_TOKENS:]))


@dataclass(frozen=True)
class ConceptTokens:
    """A concept and the positions of its tokens in the 77-token context (1 = first real token)."""

    word: str
    positions: tuple[int, ...]


class TokenMappingError(ValueError):
    """A concept could not be placed in the prompt; the message says why and what the prompt has."""


def find_subsequence(haystack: Sequence[int], needle: Sequence[int]) -> int:
    """Index of the first occurrence of needle in haystack, or -1."""
    n = len(needle)
    if n == 0:
        return -1
    for i in range(len(haystack) - n + 1):
        if list(haystack[i : i + n]) == list(needle):
            return i
    return -1


def locate_concept(
    prompt: PromptTokens,
    word: str,
    encode: Callable[[str], list[int]],
    decode: Callable[[list[int]], str] | None = None,
) -> ConceptTokens:
    """Positions of `word` in the prompt's first chunk; TokenMappingError with a clear reason otherwise."""
    for name, positions in prompt.spans:
        if name.lower() == word.lower():
            return ConceptTokens(word, tuple(positions))
    ids = [int(i) for i in encode(word)]
    if not ids:
        raise TokenMappingError(f"'{word}' has no tokens")
    if len(ids) > CHUNK_TOKENS:
        raise TokenMappingError(f"'{word}' is {len(ids)} tokens long; a concept must fit in {CHUNK_TOKENS} tokens")
    real = prompt.ids[1 : 1 + prompt.n_real]
    at = find_subsequence(real, ids)
    if at >= 0:
        return ConceptTokens(word, tuple(range(1 + at, 1 + at + len(ids))))
    if find_subsequence(prompt.later_ids, ids) >= 0 or _straddles(real, prompt.later_ids, ids):
        raise TokenMappingError(
            f"'{word}' comes after the first {CHUNK_TOKENS} tokens of the prompt; A-STAR reads only the first "
            f"{CHUNK_TOKENS} tokens: move the word earlier or shorten the prompt"
        )
    seen = ""
    if decode is not None and prompt.n_real:
        words = [decode([t]).strip() for t in real]
        seen = f" (prompt tokens: {', '.join(words[:40])}{', ...' if len(words) > 40 else ''})"
    raise TokenMappingError(f"'{word}' is not in the prompt{seen}")


def _straddles(real: Sequence[int], later: Sequence[int], ids: Sequence[int]) -> bool:
    tail = list(real[-len(ids) :]) + list(later[: len(ids)])
    return find_subsequence(tail, ids) >= 0


def map_concepts(
    prompt: PromptTokens,
    concepts: Sequence[str],
    encode: Callable[[str], list[int]],
    decode: Callable[[list[int]], str] | None = None,
) -> tuple[list[ConceptTokens], list[str]]:
    """Locate every concept; returns the found ones and one warning per concept that was dropped."""
    found: list[ConceptTokens] = []
    warnings: list[str] = []
    taken: set[int] = set()
    for word in concepts:
        try:
            ct = locate_concept(prompt, word, encode, decode)
        except TokenMappingError as e:
            warnings.append(str(e))
            continue
        if taken.intersection(ct.positions):
            warnings.append(f"'{word}' uses the same tokens as another concept; dropped")
            continue
        taken.update(ct.positions)
        found.append(ct)
    return found, warnings
