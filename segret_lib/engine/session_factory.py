"""The one way to build a SegretSession: settings + the UNet + each image's concept positions (from the host's
prompt plan, or from plain prompt tokens). Used by the script's life cycle, the tests and quality/ (host-free)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from ..settings.params import SegretParams
from .capture import cross_attention_modules
from .checkpointing import unet_blocks
from .session import Keys, SegretSession
from .tokens import ConceptTokens, PromptTokens, map_concepts


def new_session(params: SegretParams, unet: nn.Module, concepts: Sequence[Sequence[ConceptTokens]],
                keys: Sequence[Keys], **options) -> SegretSession:
    """A session refining through `unet`: its cross-attention layers are captured, its top-level blocks are
    recomputed in low-VRAM mode and its parameters stop requiring grad during refinement. concepts and keys:
    per image, as PromptPlan.at_step returns them; options: the rest of SegretSession's keyword arguments."""
    return SegretSession(params, cross_attention_modules(unet), concepts, keys, blocks=unet_blocks(unet),
                         model=unet, **options)


def session_for_prompts(params: SegretParams, unet: nn.Module, prompts: Sequence[PromptTokens],
                        encode: Callable[[str], list[int]], decode: Callable[[list[int]], str] | None = None,
                        words: Sequence[Sequence[str]] | None = None, **options
                        ) -> tuple[SegretSession, list[list[str]]]:
    """A session for images with plain prompts (one 77-token chunk list each, no AND or prompt editing): each
    image's concepts located in its prompt (words: per image its concept words; default params.concepts for
    all). Returns the session and, per image, the warnings of the concepts that were dropped."""
    words = [params.concepts] * len(prompts) if words is None else words
    concepts, keys, warnings = [], [], []
    for prompt, image_words in zip(prompts, words, strict=True):
        found, dropped = map_concepts(prompt, image_words, encode, decode)
        concepts.append(found)
        keys.append(prompt.n_real)
        warnings.append(dropped)
    return new_session(params, unet, concepts, keys, **options), warnings
