"""The WebUI's prompt text and tokenizer, as A-STAR needs them: the text the conditioning is made from and the
77-token chunk the UNet attends to (emphasis, embeddings and BREAK handled by the WebUI itself)."""

from __future__ import annotations

import re
from typing import Any

from modules import prompt_parser

from .tokens import PromptTokens

_RE_AND = re.compile(r"\bAND\b")
_RE_WEIGHT = re.compile(r"^(.*?)(?::\s*[-+]?\d*\.?\d+\s*)?$", re.S)


def text_encoder(sd_model) -> Any:
    """The object with the WebUI's tokenize/tokenize_line (SDXL: the first, CLIP-L, embedder)."""
    model = sd_model.cond_stage_model
    if hasattr(model, "tokenize_line"):
        return model
    for embedder in getattr(model, "embedders", []):
        if hasattr(embedder, "tokenize_line"):
            return embedder
    raise RuntimeError("this model's text encoder has no WebUI tokenizer (tokenize_line)")


def first_subprompt(prompt: str, steps: int) -> str:
    """The text the first conditioning of a prompt is made from: before any AND, at the first schedule."""
    text = _RE_AND.split(prompt)[0]
    text = _RE_WEIGHT.match(text.strip()).group(1)
    try:
        schedules = prompt_parser.get_learned_conditioning_prompt_schedules([text], max(int(steps), 1))
        return schedules[0][0][1]
    except Exception:  # malformed prompt-editing syntax: the WebUI falls back to the raw text too
        return text


def prompt_tokens(encoder, prompt: str) -> PromptTokens:
    """First 77-token chunk as the WebUI builds it (emphasis, embeddings and BREAK handled by the WebUI).

    A textual-inversion embedding takes placeholder ids in the chunk and a fix (offset, embedding) that puts
    its vectors at offset+1.. in the context; it becomes a named span, so its name works as a concept.
    """
    chunks, _ = encoder.tokenize_line(prompt)
    ids = [int(t) for t in chunks[0].tokens] if chunks else []
    end = int(getattr(encoder, "id_end", ids[-1] if ids else 0))
    spans = []
    for offset, embedding in (chunks[0].fixes or []) if chunks else []:
        length = int(getattr(embedding, "vectors", 0) or 0)
        name = getattr(embedding, "name", None)
        if name and length > 0:
            spans.append((str(name), tuple(range(offset + 1, offset + 1 + length))))
    n_real = next((i - 1 for i, t in enumerate(ids[1:], start=1) if t == end), max(len(ids) - 2, 0))
    later = [int(t) for c in chunks[1:] for t in c.tokens[1:] if int(t) != end]
    return PromptTokens(tuple(ids), n_real, tuple(later), tuple(spans))


def encode_word(encoder, word: str) -> list[int]:
    return [int(t) for t in encoder.tokenize([word])[0]]


def decode_tokens(encoder):
    """A token decoder for error messages, if the encoder exposes one."""
    tok = getattr(getattr(encoder, "wrapped", None), "tokenizer", None)
    if tok is not None and hasattr(tok, "decode"):
        return lambda ids: tok.decode(ids)
    return None
