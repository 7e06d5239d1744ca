"""Turn captured cross-attention probabilities into per-concept maps (A&E preprocessing)."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .tokens import ConceptTokens


def capture_hw(latent_h: int, latent_w: int) -> tuple[int, int]:
    """Capture resolution: the UNet level at 1/4 of the latent, ceil(H/32) x ceil(W/32) in pixels."""
    return math.ceil(math.ceil(latent_h / 2) / 2), math.ceil(math.ceil(latent_w / 2) / 2)


def gaussian_profile(size: int, sigma: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """exp(-x^2 / (2 sigma^2)) at the size samples x centred on the middle one (not normalised; sigma > 0)."""
    ax = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    return torch.exp(-(ax**2) / (2 * sigma**2))


def gaussian_kernel(size: int, sigma: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised 2-D Gaussian kernel [size, size]."""
    if sigma <= 0 or size == 1:
        k = torch.zeros(size, size, device=device, dtype=dtype)
        k[size // 2, size // 2] = 1.0
        return k
    g = gaussian_profile(size, sigma, device, dtype)
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
    return F.conv2d(x, _kernel(kernel, sigma, maps.device, maps.dtype)).squeeze(1)


@functools.lru_cache(maxsize=32)
def _kernel(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """gaussian_kernel as a [1, 1, size, size] conv weight, made once per device (a normal tensor, also when
    first asked for under inference mode, so autograd may save it)."""
    with torch.inference_mode(False), torch.no_grad():
        return gaussian_kernel(size, sigma, device=device, dtype=dtype)[None, None]


@functools.lru_cache(maxsize=256)
def device_ints(values: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """A long tensor of `values` on `device`, copied there once (a host-to-device copy waits on a GPU)."""
    with torch.inference_mode(False):
        return torch.tensor(values, dtype=torch.long).to(device)


@functools.lru_cache(maxsize=256)
def _token_weights(columns: tuple[tuple[int, ...], ...], n_keys: int, combine: str,
                   device: torch.device) -> torch.Tensor:
    """[K, C] float32 matrix whose column c adds ('sum') or averages ('mean') concept c's token columns."""
    w = torch.zeros(n_keys, len(columns))
    for c, cols in enumerate(columns):
        for k in cols:
            w[k, c] += 1.0 if combine == "sum" else 1.0 / len(cols)
    with torch.inference_mode(False):
        return w.clone().to(device)


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
        text = probs.index_select(1, device_ints(keys, probs.device))
    text = (text.float() * temperature).softmax(dim=-1)
    column = {k: i for i, k in enumerate(keys)}
    columns = []
    for concept in concepts:
        try:
            columns.append(tuple(column[p] for p in concept.positions))
        except KeyError as e:
            raise ValueError(f"'{concept.word}' sits at key {e.args[0]}, which is not a real prompt token") from None
    if not columns:
        return text.new_zeros((0, h, w))
    # every concept at once: a fixed number of operations whatever the number of concepts
    if combine == "max":
        width = max(len(c) for c in columns)
        padded = tuple(i for c in columns for i in (*c, *(c[:1] * (width - len(c)))))  # repeats leave the max
        m = text.index_select(1, device_ints(padded, text.device)).reshape(h * w, len(columns), width)
        m = m.max(dim=-1).values
    else:
        m = text @ _token_weights(tuple(columns), text.shape[1], combine, text.device)
    return smooth(m.t().reshape(len(columns), h, w), kernel, sigma)
