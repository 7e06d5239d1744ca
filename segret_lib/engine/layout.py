"""Layout boxes in the engine (A-STAR paper, section 5): box -> retention mask at any capture resolution, and
the layout-aware loss of one image (host-free). A boxed concept's retention target B^m is its box instead of the
previous step's binarised map; a concept without a box keeps the normal target. Segregation is unchanged.
Parsing and the text forms are settings.layout_boxes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..settings.layout_boxes import Box, Layout, box_of
from .attention_maps import capture_hw
from .losses import loss_terms, retention_loss

_EPS = 1e-8


# ---------------------------------------------------------------------------------------------- masks
def box_mask(box: Box, latent_hw: tuple[int, int], hw: tuple[int, int] | None = None) -> torch.Tensor:
    """The box as a binary mask at the capture resolution of a latent of latent_hw ([h, w], float).

    At SD's capture level (1/4 of the latent) cell j covers latent pixels [4j, 4j + 4) clipped to the latent
    (the last cell of an odd size covers fewer; other levels alike); a cell is in the mask when at least half
    of its image area is inside the box. A box smaller than that still gets the cell holding its centre, so
    every box has at least one cell."""
    hw = hw or capture_hw(*latent_hw)
    rows = _axis_cover(box[1], box[3], latent_hw[0], hw[0])
    cols = _axis_cover(box[0], box[2], latent_hw[1], hw[1])
    mask = (torch.outer(rows, cols) >= 0.5 - 1e-6).float()
    if not mask.any():
        cy = _cell_of((box[1] + box[3]) / 2, latent_hw[0], hw[0])
        cx = _cell_of((box[0] + box[2]) / 2, latent_hw[1], hw[1])
        mask[cy, cx] = 1.0
    return mask


def _cell_edges(latent: int, cells: int) -> torch.Tensor:
    """Image-fraction edges of the capture cells along one axis (cells + 1 values, last = 1)."""
    size = float(latent) / cells  # a capture level that is not 2^k below the latent: even cells
    factor = 1
    while factor <= latent:
        if -(-latent // factor) == cells:  # ceil(latent / factor): this level's stride-2 downsampling
            size = float(factor)
            break
        factor *= 2
    edges = torch.arange(cells + 1, dtype=torch.float64) * size
    return (edges.clamp(max=latent) / latent).float()


def _axis_cover(lo: float, hi: float, latent: int, cells: int) -> torch.Tensor:
    """Per cell, the fraction of its (in-image) length inside [lo, hi]."""
    e = _cell_edges(latent, cells)
    a, b = e[:-1], e[1:]
    inside = (torch.minimum(b, torch.tensor(hi)) - torch.maximum(a, torch.tensor(lo))).clamp(min=0)
    return inside / (b - a).clamp(min=_EPS)


def _cell_of(frac: float, latent: int, cells: int) -> int:
    e = _cell_edges(latent, cells)
    return int(min(max(int(torch.searchsorted(e, torch.tensor(float(frac)), right=True)) - 1, 0), cells - 1))


@dataclass
class LayoutTarget:
    """One image's layout at one capture resolution: masks [C, H, W] (zeros for a concept without a box),
    which concepts are boxed, and, for the exclusive option, each concept's region in the other boxes."""

    masks: torch.Tensor
    boxed: torch.Tensor  # bool [C], always on the CPU
    others: torch.Tensor | None = None  # [C, H, W]: union of the other concepts' boxes minus the own box

    @property
    def shape(self) -> torch.Size:
        return self.masks.shape

    def to(self, device: torch.device | str) -> LayoutTarget:
        """This target on `device` (copied once per device, then reused at every step)."""
        device = torch.device(device)
        if self.masks.device == device:
            return self
        cache = self.__dict__.setdefault("_copies", {})
        if device not in cache:
            others = self.others.to(device) if self.others is not None else None
            cache[device] = LayoutTarget(self.masks.to(device), self.boxed, others)  # boxed stays on the CPU
        return cache[device]


def image_target(layout: Layout, words: Sequence[str], latent_hw: tuple[int, int],
                 exclusive: bool = False) -> LayoutTarget | None:
    """The target of an image whose concepts (in map order) are `words`; None when none of them has a box."""
    boxes = [box_of(layout, w) for w in words]
    if not any(b is not None for b in boxes):
        return None
    hw = capture_hw(*latent_hw)
    masks = torch.stack([box_mask(b, latent_hw, hw) if b is not None else torch.zeros(hw) for b in boxes])
    boxed = torch.tensor([b is not None for b in boxes])
    others = None
    if exclusive:
        total = masks.sum(0)
        others = ((total - masks) > 0).float() * (1 - masks)
    return LayoutTarget(masks, boxed, others)


def in_box_fraction(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per concept, the share of its map mass inside its mask ([C])."""
    return (maps * masks).flatten(1).sum(-1) / (maps.flatten(1).sum(-1) + _EPS)


# ---------------------------------------------------------------------------------------------- loss
def layout_terms(method: str, maps: torch.Tensor, prev_masks: torch.Tensor | None, target: LayoutTarget,
                 seg_weight: float, ret_weight: float, strength: float, normalise: bool = False,
                 excite_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The method's loss of one image with a layout, and its terms as tensors on the maps' device.
    normalise (step rules "balanced" and "steady"): L_seg as a mean over the pairs, and the free concepts'
    L_ret divided by the number of all concepts, so each concept weighs in as it does without a layout; the box
    terms are unchanged.

    Segregation and Attend-and-Excite terms (the latter times excite_weight in Both) as without a layout.
    Retention (Eq. 3): concepts without a box against the previous step's mask with ret_weight (A-STAR, Both);
    boxed concepts against their box with `strength`, with every method and from the first step on. Exclusive:
    plus `strength` times the sum over concepts of each one's share of map mass in the other concepts' boxes
    (outside its own). Terms: 'seg',
    'ret', 'aae' as usual, 'layout' (the box retention term), 'inbox' (the boxed concepts' mean in-box share),
    'outside' (exclusive term). Which concepts are boxed is known on the host: nothing is read back."""
    loss, terms = loss_terms(method, maps, None, seg_weight, ret_weight, normalise, excite_weight)
    boxed_flags = target.boxed.tolist()  # kept on the CPU (LayoutTarget.to)
    boxed = [i for i, b in enumerate(boxed_flags) if b]
    free = [i for i, b in enumerate(boxed_flags) if not b]
    target = target.to(maps.device)
    if method != "aae" and ret_weight and prev_masks is not None and free:
        ret = retention_loss(maps[free], prev_masks[free])
        loss = loss + ret_weight * (ret / maps.shape[0] if normalise else ret)
        terms["ret"] = ret.detach()
    box_maps, box_masks = maps[boxed], target.masks[boxed]
    held = retention_loss(box_maps, box_masks)
    terms["layout"] = held.detach()
    terms["inbox"] = in_box_fraction(box_maps.detach(), box_masks).mean()
    if strength:
        loss = loss + strength * held
    if target.others is not None:
        outside = in_box_fraction(maps, target.others).sum()
        terms["outside"] = outside.detach()
        if strength:
            loss = loss + strength * outside
    return loss, terms

