"""The WebUI's prompt text and tokenizer, as A-STAR needs them: the texts the conditioning rows are made from
(AND sub-prompts, prompt-editing schedules) and the 77-token chunks the UNet attends to."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from modules import prompt_parser

from ..engine.prompt_plan import PromptPlan, Scheduled
from ..engine.tokens import CHUNK_LEN, PromptTokens


def text_encoder(sd_model) -> Any:
    """The object with the WebUI's tokenize/tokenize_line (SDXL: the first, CLIP-L, embedder)."""
    model = sd_model.cond_stage_model
    if hasattr(model, "tokenize_line"):
        return model
    for embedder in getattr(model, "embedders", []):
        if hasattr(embedder, "tokenize_line"):
            return embedder
    raise RuntimeError("this model's text encoder has no WebUI tokenizer (tokenize_line)")


def prompt_schedules(prompt: str, steps: int, hires_steps: int | None = None,
                     use_old_scheduling: bool = False) -> list[list[tuple[int, str]]]:
    """Per AND sub-prompt of `prompt`, in the order of its conditioning rows, the prompt-editing schedule
    [(end_at_step, text), ...] the WebUI builds its conditioning from (same functions, same arguments)."""
    indexes, texts, _ = prompt_parser.get_multicond_prompt_list([prompt])
    parts = [texts[i] for i, _weight in indexes[0]]
    try:
        schedules = prompt_parser.get_learned_conditioning_prompt_schedules(
            parts, max(int(steps), 1), hires_steps, use_old_scheduling)
    except Exception:  # malformed prompt-editing syntax: the WebUI falls back to the raw text too
        schedules = [[[max(int(steps), 1), text]] for text in parts]
    return [[(int(end), str(text)) for end, text in schedule] for schedule in schedules]


def prompt_tokens(encoder, prompt: str) -> PromptTokens:
    """Every 77-token chunk of `prompt` as the WebUI builds them (emphasis, embeddings, BREAK and the comma
    backtracking at 75 tokens done by the WebUI's own tokenize_line).

    A textual-inversion embedding takes placeholder ids in its chunk and a fix (offset, embedding) that puts
    its vectors at offset+1.. of that chunk; it becomes a named span, so its name works as a concept.
    """
    chunks, _ = encoder.tokenize_line(prompt)
    end = int(getattr(encoder, "id_end", 0))
    start = int(getattr(encoder, "id_start", chunks[0].tokens[0] if chunks else 0))
    pieces, spans = [], []
    for c, chunk in enumerate(chunks):
        ids = [int(t) for t in chunk.tokens]
        n = next((i - 1 for i, t in enumerate(ids[1:], start=1) if t == end), max(len(ids) - 2, 0))
        pieces.append(ids[1:1 + n])
        for offset, embedding in chunk.fixes or []:
            length = int(getattr(embedding, "vectors", 0) or 0)
            name = getattr(embedding, "name", None)
            if name and length > 0:
                first = c * CHUNK_LEN + offset + 1
                spans.append((str(name), tuple(range(first, first + length))))
    return PromptTokens.from_chunks(pieces or [[]], start, end, int(getattr(encoder, "id_pad", end)), spans)


def prompt_plan(encoder, prompts: Sequence[str], concepts: Sequence[str], steps: int,
                hires_steps: int | None = None, use_old_scheduling: bool = False) -> PromptPlan:
    """Concept positions for a batch of prompts, every AND sub-prompt and prompt-editing entry."""
    cache: dict[str, PromptTokens] = {}

    def tokens(text: str) -> PromptTokens:
        if text not in cache:
            cache[text] = prompt_tokens(encoder, text)
        return cache[text]

    images = [[[Scheduled(end, tokens(text)) for end, text in schedule]
               for schedule in prompt_schedules(prompt, steps, hires_steps, use_old_scheduling)]
              for prompt in prompts]
    return PromptPlan(images, concepts, lambda w: encode_word(encoder, w), decode_tokens(encoder))


def encode_word(encoder, word: str) -> list[int]:
    return [int(t) for t in encoder.tokenize([word])[0]]


def decode_tokens(encoder):
    """A token decoder for error messages, if the encoder exposes one."""
    # A1111: the embedder wraps the CLIP model that holds the tokenizer; Forge: the text processing engine holds it
    tok = getattr(getattr(encoder, "wrapped", None), "tokenizer", None) or getattr(encoder, "tokenizer", None)
    if tok is not None and hasattr(tok, "decode"):
        return lambda ids: tok.decode(ids)
    return None
