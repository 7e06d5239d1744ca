"""Attribute binding (in the spirit of SynGen, Rassin et al. 2023): each modifier word's cross-attention map is
pulled onto its own concept's head noun and pushed off the other concepts' head nouns.

A concept as typed is a phrase ("red circle", "red {traffic light}"): its last word is the head, the words
before it are modifiers (tokens.ConceptTokens.head / .modifiers). The word maps come from the same captured
attention as the concept maps (attention_maps.concept_maps over one word's tokens), so binding costs no UNet
call. Maps are compared as distributions (each normalised to sum 1) by their overlap sum(min(p, q)), in [0, 1]
(1: the same map), the measure A-STAR's segregation term uses:

    pull_k = 1 - overlap(modifier k, its head)
    push_k = mean over the other concepts' heads n of overlap(modifier k, head n)

and L_bind = mean over modifiers of (pull_k + push_k) under the "balanced" and "steady" step rules (the sum
under v1), so its scale does not grow with the number of concepts. One-word concepts have no modifier; they
still count as other concepts' heads to push off."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .tokens import ConceptTokens

_EPS = 1e-8


@dataclass(frozen=True)
class WordMaps:
    """One image's word maps: heads [C, H, W] (one per concept, in the concepts' order), modifiers [K, H, W]
    and owner[k], the concept whose head modifier k belongs to."""

    heads: torch.Tensor
    modifiers: torch.Tensor
    owner: tuple[int, ...]


def word_tokens(concepts: Sequence[ConceptTokens]) -> tuple[list[ConceptTokens], tuple[int, ...]]:
    """The words whose maps binding needs: every concept's head (in order), then every modifier, as
    ConceptTokens for concept_maps; and each modifier's concept index."""
    heads = [ConceptTokens(c.word, c.head, c.part) for c in concepts]
    mods, owner = [], []
    for i, c in enumerate(concepts):
        for k, positions in enumerate(c.modifiers):
            mods.append(ConceptTokens(f"{c.word}#{k}", positions, c.part))
            owner.append(i)
    return heads + mods, tuple(owner)


def bound_labels(concepts: Sequence[ConceptTokens]) -> tuple[list[str], tuple[int, ...]]:
    """For the overlay: per concept with modifiers, its head's label then each modifier's, each
    "<concept>: <word>" ("red circle: circle", "red circle: red"), and their indexes in word_tokens' order
    (heads, then modifiers)."""
    from .tokens import concept_words

    labels, order, at = [], [], len(concepts)
    for i, c in enumerate(concepts):
        n = len(c.modifiers)
        if not n:
            continue
        words = concept_words(c.word)
        if len(words) != n + 1:  # grouped from textual-inversion spans differently: number the words
            words = [f"word {k + 1}" for k in range(n + 1)]
        labels.append(f"{c.word}: {words[-1]}")
        order.append(i)
        for k in range(n):
            labels.append(f"{c.word}: {words[k]}")
            order.append(at + k)
        at += n
    return labels, tuple(order)


def has_modifiers(concepts: Sequence[ConceptTokens]) -> bool:
    """Whether some concept has a word to bind."""
    return any(c.modifiers for c in concepts)


@functools.lru_cache(maxsize=256)
def _own(owner: tuple[int, ...], n_heads: int, device: torch.device) -> torch.Tensor:
    """[K, C] float one-hot of each modifier's own head, made once per device."""
    w = torch.zeros(len(owner), n_heads)
    for k, c in enumerate(owner):
        w[k, c] = 1.0
    with torch.inference_mode(False):
        return w.clone().to(device)


def _normalised(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(1)
    return flat / (flat.sum(-1, keepdim=True) + _EPS)


def binding_parts(words: WordMaps) -> tuple[torch.Tensor, torch.Tensor]:
    """Per modifier, (pull, push) as [K] tensors, each in [0, 1]. The heads are targets (detached): the
    modifier moves to its noun, not the noun to the (more diffuse) modifier, which would smear the noun."""
    heads, mods = _normalised(words.heads.detach()), _normalised(words.modifiers)
    overlap = torch.minimum(mods[:, None], heads[None]).sum(-1)  # [K, C]
    own = _own(words.owner, heads.shape[0], heads.device).to(overlap.dtype)
    pull = 1.0 - (overlap * own).sum(-1)
    others = heads.shape[0] - 1
    push = (overlap * (1.0 - own)).sum(-1) / others if others > 0 else torch.zeros_like(pull)
    return pull, push


def binding_loss(words: WordMaps | None, normalise: bool = True) -> torch.Tensor | None:
    """L_bind of one image: mean (normalise) or sum over its modifiers of pull + push; None without any."""
    if words is None or not words.owner:
        return None
    pull, push = binding_parts(words)
    per = pull + push
    return per.mean() if normalise else per.sum()
