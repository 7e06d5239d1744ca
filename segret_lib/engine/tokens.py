"""Map concept words/phrases to key positions in a prompt's CLIP context: one or more 77-token chunks
concatenated along the token axis, as the WebUI encodes prompts over 75 tokens or with BREAK."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

CHUNK_TOKENS = 75  # real tokens per 77-token context (plus start and end)
CHUNK_LEN = CHUNK_TOKENS + 2


@dataclass(frozen=True)
class PromptTokens:
    """A tokenised prompt, all chunks.

    ids: the ids of every 77-token chunk concatenated (each chunk: start-of-text, real tokens, end, padding);
    chunk_real: how many real prompt tokens each chunk holds (they follow its start-of-text);
    spans: named key positions that have no BPE ids of their own (textual-inversion embeddings: name, positions).
    """

    ids: tuple[int, ...]
    chunk_real: tuple[int, ...]
    spans: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @classmethod
    def from_ids(cls, real_ids: Sequence[int], bos: int, eos: int, pad: int | None = None) -> PromptTokens:
        """Build from a prompt's real token ids (no specials), chunked every 75 tokens like CLIP's."""
        pad = eos if pad is None else pad
        real = list(real_ids)
        pieces = [real[i:i + CHUNK_TOKENS] for i in range(0, len(real), CHUNK_TOKENS)] or [[]]
        return cls.from_chunks(pieces, bos, eos, pad)

    @classmethod
    def from_chunks(cls, pieces: Sequence[Sequence[int]], bos: int, eos: int, pad: int | None = None,
                    spans: Sequence[tuple[str, tuple[int, ...]]] = ()) -> PromptTokens:
        """Build from the real ids of each chunk (how the WebUI split the prompt: BREAK, commas, 75 tokens)."""
        pad = eos if pad is None else pad
        ids: list[int] = []
        for piece in pieces:
            piece = list(piece)[:CHUNK_TOKENS]
            ids += [bos, *piece, eos] + [pad] * (CHUNK_TOKENS - len(piece))
        return cls(tuple(ids), tuple(min(len(p), CHUNK_TOKENS) for p in pieces), tuple(spans))

    @property
    def n_real(self) -> int:
        """Real prompt tokens in all chunks."""
        return sum(self.chunk_real)

    @property
    def real_positions(self) -> tuple[int, ...]:
        """Key positions of the real tokens of every chunk, in order (the tokens A-STAR's softmax spans)."""
        return tuple(c * CHUNK_LEN + 1 + i for c, n in enumerate(self.chunk_real) for i in range(n))

    def chunk_ids(self, chunk: int) -> tuple[int, ...]:
        """The real ids of one chunk."""
        start = chunk * CHUNK_LEN + 1
        return self.ids[start:start + self.chunk_real[chunk]]


@dataclass(frozen=True)
class ConceptTokens:
    """A concept and the key positions of its tokens (1 = first real token of the first chunk; chunk c starts
    at c * 77). part: which AND sub-prompt of the image holds it (0 = the first)."""

    word: str
    positions: tuple[int, ...]
    part: int = 0
    words: tuple[tuple[int, ...], ...] = ()  # the positions of each word, in order (empty: one word)

    @property
    def groups(self) -> tuple[tuple[int, ...], ...]:
        """The key positions of each word of the concept (one group for a one-word concept)."""
        return self.words or (self.positions,)

    @property
    def head(self) -> tuple[int, ...]:
        """The head noun's positions: the last word (attribute binding, binding.py)."""
        return self.groups[-1]

    @property
    def modifiers(self) -> tuple[tuple[int, ...], ...]:
        """The positions of each word before the head ("red" in "red dress"); () for a one-word concept."""
        return self.groups[:-1]


_WORD = re.compile(r"\{([^{}]*)\}|([^\s{}]+)")


def concept_words(text: str) -> list[str]:
    """The words of a concept as typed: split at spaces, with {braces} holding several words as one
    ("red {traffic light}": the modifier "red" and the head "traffic light"; "{traffic light}": one word)."""
    return [" ".join((braced if braced is not None and braced.strip() else plain or "").split())
            for braced, plain in _WORD.findall(text) if (braced or plain or "").strip()]


def concept_text(text: str) -> str:
    """The concept as it appears in the prompt: its words without the braces."""
    return " ".join(concept_words(text)) or " ".join(text.split())


class TokenMappingError(ValueError):
    """A concept could not be placed in the prompt; the message says why and what the prompt has."""


def find_subsequence(haystack: Sequence[int], needle: Sequence[int]) -> int:
    """Index of the first occurrence of needle in haystack, or -1."""
    n = len(needle)
    if n == 0:
        return -1
    needle = list(needle)
    for i in range(len(haystack) - n + 1):
        if list(haystack[i : i + n]) == needle:
            return i
    return -1


def locate_concept(
    prompt: PromptTokens,
    word: str,
    encode: Callable[[str], list[int]],
    decode: Callable[[list[int]], str] | None = None,
) -> ConceptTokens:
    """Key positions of `word`'s first occurrence in any chunk, grouped by word (ConceptTokens.words);
    TokenMappingError with the reason otherwise. `word` may hold {braces} (concept_words) and
    textual-inversion names (the prompt's spans), also as one word of several."""
    text = concept_text(word)
    for name, positions in prompt.spans:
        if name.lower() == text.lower():
            return ConceptTokens(word, tuple(positions))
    ids = [int(i) for i in encode(text)]
    if not ids:
        raise TokenMappingError(f"'{word}' has no tokens")
    if len(ids) > CHUNK_TOKENS:
        raise TokenMappingError(f"'{word}' is {len(ids)} tokens long; a concept must fit in {CHUNK_TOKENS} tokens")
    for chunk in range(len(prompt.chunk_real)):
        at = find_subsequence(prompt.chunk_ids(chunk), ids)
        if at >= 0:
            start = chunk * CHUNK_LEN + 1 + at
            return ConceptTokens(word, tuple(range(start, start + len(ids))),
                                 words=_word_groups(word, ids, start, encode))
    by_word = _locate_by_word(prompt, word, encode)
    if by_word is not None:
        return by_word
    for chunk in range(len(prompt.chunk_real) - 1):
        if _straddles(prompt.chunk_ids(chunk), prompt.chunk_ids(chunk + 1), ids):
            raise TokenMappingError(
                f"'{word}' is split between token chunks {chunk + 1} and {chunk + 2} of the prompt (the WebUI "
                f"encodes every {CHUNK_TOKENS} tokens separately): put BREAK or a comma just before it"
            )
    seen = ""
    if decode is not None and prompt.n_real:
        words = [decode([t]).strip() for c in range(len(prompt.chunk_real)) for t in prompt.chunk_ids(c)]
        seen = f" (prompt tokens: {', '.join(words[:40])}{', ...' if len(words) > 40 else ''})"
    raise TokenMappingError(f"'{word}' is not in the prompt{seen}")


def _word_groups(word: str, ids: Sequence[int], start: int,
                 encode: Callable[[str], list[int]]) -> tuple[tuple[int, ...], ...]:
    """Split the positions start.. of a concept's ids by word, when its words encode to exactly those ids
    (a BPE tokenizer splits at spaces first, so they do); () for one word or when they do not add up."""
    words = concept_words(word)
    if len(words) < 2:
        return ()
    pieces = [[int(i) for i in encode(w)] for w in words]
    if any(not p for p in pieces) or [i for p in pieces for i in p] != list(ids):
        return ()
    groups, at = [], start
    for p in pieces:
        groups.append(tuple(range(at, at + len(p))))
        at += len(p)
    return tuple(groups)


def _locate_by_word(prompt: PromptTokens, word: str, encode: Callable[[str], list[int]]) -> ConceptTokens | None:
    """A concept of several words of which some are textual-inversion names ("red mycat"): each name's span
    and each other word's ids, next to each other in one chunk; None if no such placement exists."""
    words = concept_words(word)
    names = {n.lower(): tuple(pos) for n, pos in prompt.spans}
    if len(words) < 2 or not any(w.lower() in names for w in words):
        return None
    pieces = [None if w.lower() in names else [int(i) for i in encode(w)] for w in words]
    if any(p is not None and not p for p in pieces):
        return None
    key_ids = {c * CHUNK_LEN + 1 + i: t for c in range(len(prompt.chunk_real))
               for i, t in enumerate(prompt.chunk_ids(c))}
    for first in sorted(key_ids):
        groups, at = [], first
        for w, p in zip(words, pieces, strict=True):
            if p is None:
                span = names[w.lower()]
                if span[0] != at:
                    break
                groups.append(span)
            else:
                if any(key_ids.get(at + k) != t for k, t in enumerate(p)):
                    break
                groups.append(tuple(range(at, at + len(p))))
            at = groups[-1][-1] + 1
        else:
            if len({(g[0] - 1) // CHUNK_LEN for g in groups}) == 1:
                return ConceptTokens(word, tuple(i for g in groups for i in g), words=tuple(groups))
    return None


def _straddles(first: Sequence[int], second: Sequence[int], ids: Sequence[int]) -> bool:
    """Whether ids occur across the end of `first` and the start of `second`."""
    k = len(ids) - 1
    if k < 1:
        return False
    return find_subsequence([*first[-k:], *second[:k]], ids) >= 0


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
