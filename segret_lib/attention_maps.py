"""Turn captured cross-attention probabilities into per-concept maps (A&E preprocessing)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .tokens import ConceptTokens


def capture_hw(latent_h: int, latent_w: int) -> tuple[int, int]:
    """Capture resolution: the UNet level at 1/4 of the latent, ceil(H/32) x ceil(W/32) in pixels."""
    return math.ceil(math.ceil(latent_h / 2) / 2), math.ceil(math.ceil(latent_w / 2) / 2)


def gaussian_kernel(size: int, sigma: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised 2-D Gaussian kernel [size, size]."""
    if sigma <= 0 or size == 1:
        k = torch.zeros(size, size, device=device, dtype=dtype)
        k[size // 2, size // 2] = 1.0
        return k
    ax = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    k = torch.outer(g, g)
    return k / k.sum()


def smooth(maps: torch.Tensor, kernel: int = 3, sigma: float = 0.5) -> torch.Tensor:
    """Gaussian smoothing of [C, H, W] maps with reflect padding (kernel, sigma as in A&E)."""
    if kernel <= 1:
        return maps
    pad = kernel // 2
    x = maps.unsqueeze(1)
    mode = "reflect" if min(maps.shape[-2:]) > pad else "replicate"
    x = F.pad(x, (pad, pad, pad, pad), mode=mode)
    w = gaussian_kernel(kernel, sigma, device=maps.device, dtype=maps.dtype)[None, None]
    return F.conv2d(x, w).squeeze(1)


def concept_maps(
    probs: torch.Tensor,
    hw: tuple[int, int],
    keys: int | Sequence[int],
    concepts: Sequence[ConceptTokens],
    temperature: float = 100.0,
    combine: str = "mean",
    kernel: int = 3,
    sigma: float = 0.5,
) -> torch.Tensor:
    """Per-concept maps [C, H, W] for one image.

    probs: attention probabilities averaged over heads and layers, [H*W, K] (K = all keys of the context).
    keys: the key positions of the prompt's real tokens, over all its 77-token chunks (an int n means the
    first chunk's 1..n). Only these keys are kept (start-of-text, end and padding of every chunk are dropped),
    scaled by `temperature` and soft-maxed per pixel; each concept's token maps (its positions are key
    positions too) are combined and smoothed.
    """
    h, w = hw
    if probs.shape[0] != h * w:
        raise ValueError(f"attention has {probs.shape[0]} pixels, expected {h}x{w}")
    keys = tuple(range(1, 1 + keys)) if isinstance(keys, int) else tuple(keys)
    if keys and keys[-1] - keys[0] == len(keys) - 1:  # one run of keys (one chunk): a view, no copy
        text = probs[:, keys[0]:keys[-1] + 1]
    else:
        text = probs.index_select(1, torch.tensor(keys, dtype=torch.long, device=probs.device))
    text = (text.float() * temperature).softmax(dim=-1)
    column = {k: i for i, k in enumerate(keys)}
    out = []
    for concept in concepts:
        try:
            idx = torch.tensor([column[p] for p in concept.positions], device=probs.device)
        except KeyError as e:
            raise ValueError(f"'{concept.word}' sits at key {e.args[0]}, which is not a real prompt token") from None
        token_maps = text.index_select(1, idx)
        if combine == "max":
            m = token_maps.max(dim=1).values
        elif combine == "sum":
            m = token_maps.sum(dim=1)
        else:
            m = token_maps.mean(dim=1)
        out.append(m.reshape(h, w))
    if not out:
        return text.new_zeros((0, h, w))
    return smooth(torch.stack(out), kernel, sigma)
