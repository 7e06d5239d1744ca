"""Map concept words/phrases to key positions in a prompt's CLIP context: one or more 77-token chunks
concatenated along the token axis, as the WebUI encodes prompts over 75 tokens or with BREAK."""

from __future__ import annotations

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
    """Key positions of `word`'s first occurrence in any chunk; TokenMappingError with the reason otherwise."""
    for name, positions in prompt.spans:
        if name.lower() == word.lower():
            return ConceptTokens(word, tuple(positions))
    ids = [int(i) for i in encode(word)]
    if not ids:
        raise TokenMappingError(f"'{word}' has no tokens")
    if len(ids) > CHUNK_TOKENS:
        raise TokenMappingError(f"'{word}' is {len(ids)} tokens long; a concept must fit in {CHUNK_TOKENS} tokens")
    for chunk in range(len(prompt.chunk_real)):
        at = find_subsequence(prompt.chunk_ids(chunk), ids)
        if at >= 0:
            start = chunk * CHUNK_LEN + 1 + at
            return ConceptTokens(word, tuple(range(start, start + len(ids))))
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
