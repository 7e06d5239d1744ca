"""Low-VRAM refinement: the UNet's blocks are checkpointed during the refinement pass, so the backward pass
recomputes each block's activations instead of keeping them all (torch.utils.checkpoint, non-reentrant)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from torch import nn
from torch.utils.checkpoint import checkpoint

from .patching import InstancePatches


def unet_blocks(unet: nn.Module) -> list[nn.Module]:
    """The top-level blocks of an ldm or sgm UNetModel, in forward order (empty if it has none)."""
    blocks = [*getattr(unet, "input_blocks", ())]
    if getattr(unet, "middle_block", None) is not None:
        blocks.append(unet.middle_block)
    return [*blocks, *getattr(unet, "output_blocks", ())]


@contextmanager
def checkpointed(blocks: Iterable[nn.Module]) -> Iterator[None]:
    """While inside, each block's forward runs under torch.utils.checkpoint; the previous forwards come back on
    exit, also on errors. Attention capture must replay during the backward pass (AttentionCapture.replay)."""
    patches = InstancePatches()

    def make_wrapper(original):
        def forward(*args, **kwargs):
            if forward.segret_inert:
                return original(*args, **kwargs)
            return checkpoint(original, *args, use_reentrant=False, **kwargs)

        return forward

    try:
        for block in blocks:
            patches.patch(block, "forward", make_wrapper)
        yield
    finally:
        patches.restore()
