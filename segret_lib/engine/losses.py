"""A-STAR losses (Eq. 2-4), the Attend-and-Excite loss, and the retention-mask binarisation.

Maps are tensors of shape [C, H, W] (one image, C concepts), values in [0, 1].
"""

from __future__ import annotations

import torch

_EPS = 1e-8


def segregation_loss(maps: torch.Tensor) -> torch.Tensor:
    """Eq. 2: sum over concept pairs m > n of sum(min(A^m, A^n)) / sum(A^m + A^n); each term in [0, 0.5].

    All pairs at once (a [C, C] matrix of terms, its strict lower triangle summed): the number of operations
    does not depend on the number of concepts."""
    c = maps.shape[0]
    if c < 2:
        return maps.new_zeros(())
    flat = maps.flatten(1)
    overlap = torch.minimum(flat[:, None], flat[None]).sum(-1)  # [C, C]
    mass = flat.sum(-1)
    pairs = torch.ones(c, c, dtype=torch.bool, device=maps.device).tril_(-1)
    return (overlap / (mass[:, None] + mass[None] + _EPS)).masked_fill(~pairs, 0.0).sum()


def retention_loss(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Eq. 3: sum over concepts of 1 - sum(min(A^m, B^m)) / sum(A^m + B^m); B is a fixed (detached) mask."""
    masks = masks.detach().to(maps.dtype)
    overlap = torch.minimum(maps, masks).flatten(1).sum(-1)
    union = (maps + masks).flatten(1).sum(-1)
    return (1.0 - overlap / (union + _EPS)).sum()


def excite_loss(maps: torch.Tensor) -> torch.Tensor:
    """Attend-and-Excite (Chefer et al. 2023; `_compute_loss` of its reference code): max over concepts of
    max(0, 1 - max_ij A^m), i.e. the concept whose smoothed map peaks lowest drives the update."""
    if maps.shape[0] == 0:
        return maps.new_zeros(())
    peaks = maps.flatten(1).max(dim=1).values
    return (1.0 - peaks).clamp_min(0.0).max()


def otsu_threshold(values: torch.Tensor, bins: int = 256) -> float:
    """Otsu's threshold of a map: the level that maximises the between-class variance."""
    v = values.detach().float().flatten()
    lo, hi = float(v.min()), float(v.max())
    if hi - lo < 1e-12:
        return hi
    hist = torch.histc(v, bins=bins, min=lo, max=hi)
    centers = torch.linspace(lo, hi, bins + 1, device=v.device)
    centers = 0.5 * (centers[:-1] + centers[1:])
    w0 = torch.cumsum(hist, 0)
    w1 = w0[-1] - w0
    m0 = torch.cumsum(hist * centers, 0)
    mu0 = m0 / w0.clamp_min(1e-12)
    mu1 = (m0[-1] - m0) / w1.clamp_min(1e-12)
    between = w0 * w1 * (mu0 - mu1) ** 2
    between[w1 == 0] = -1
    k = int(torch.argmax(between))
    return float(centers[k] + 0.5 * (hi - lo) / bins)  # upper edge of the lower class


def binarize(maps: torch.Tensor, mode: str = "fraction", threshold: float = 0.5) -> torch.Tensor:
    """Retention masks B: per concept, A >= threshold * max(A) ('fraction', all concepts at once and on the
    device) or A >= Otsu level ('otsu', one concept at a time, read back to the host)."""
    maps = maps.detach()
    if mode != "otsu":
        level = maps.flatten(1).amax(-1) * threshold if maps.numel() else maps.new_zeros((maps.shape[0],))
        return (maps >= level.reshape(-1, *([1] * (maps.dim() - 1)))).to(maps.dtype)
    out = torch.empty_like(maps)
    for i, a in enumerate(maps):
        out[i] = (a >= otsu_threshold(a)).to(maps.dtype)
    return out


def loss_terms(
    method: str,
    maps: torch.Tensor,
    prev_masks: torch.Tensor | None,
    seg_weight: float = 1.0,
    ret_weight: float = 1.0,
    normalise: bool = False,
    excite_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of a method for one image and its terms, all as tensors on the maps' device (nothing is read
    back): 'astar' Eq. 4 (L_ret skipped without a mask: the first step), 'aae' the Attend-and-Excite loss,
    'both' their sum, Attend-and-Excite's term times excite_weight. normalise (step rules "balanced" and
    "steady"): the loss takes L_seg as a mean over the concept pairs and L_ret as a mean over the concepts; the
    terms reported stay the sums of Eq. 2 and 3 (and the unweighted excite term)."""
    terms: dict[str, torch.Tensor] = {}
    if method == "aae":
        loss = excite_loss(maps)
        return loss, {"aae": loss.detach()}
    loss = maps.new_zeros(())
    c = maps.shape[0]
    if seg_weight and c > 1:
        seg = segregation_loss(maps)
        loss = loss + seg_weight * (seg / (c * (c - 1) / 2) if normalise else seg)
        terms["seg"] = seg.detach()
    if ret_weight and prev_masks is not None:
        ret = retention_loss(maps, prev_masks)
        loss = loss + ret_weight * (ret / max(c, 1) if normalise else ret)
        terms["ret"] = ret.detach()
    if method == "both":
        aae = excite_loss(maps)
        loss = loss + excite_weight * aae
        terms["aae"] = aae.detach()
    return loss, terms

