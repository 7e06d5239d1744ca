"""Temporary capture of cross-attention probabilities from CrossAttention (attn2) modules.

Works with ldm (SD1/SD2) and sgm (SDXL) CrossAttention: both have heads, to_q/to_k/to_v/to_out and take
(x, context=None, mask=None, ...). The forward is replaced per instance and restored exactly, so the
class-level forward that WebUI attention optimisations install keeps working.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .patching import InstancePatches


class CaptureComplete(Exception):
    """Raised inside the UNet once every needed layer was captured (early exit during refinement)."""


def explicit_attention(module: nn.Module, x: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-attention computed step by step: (output, probabilities [B, heads, N, K]).

    Scores and softmax are computed in float32 (as the WebUI's upcast does), the output in the value dtype.
    """
    heads = int(module.heads)
    q, k, v = module.to_q(x), module.to_k(context), module.to_v(context)
    b, n, inner = q.shape
    d = inner // heads
    probs = attention_probs(q, k, heads, float(getattr(module, "scale", d**-0.5)))
    v = v.reshape(b, -1, heads, d).transpose(1, 2)
    out = torch.matmul(probs.to(v.dtype), v).transpose(1, 2).reshape(b, n, inner)
    return module.to_out(out), probs


def attention_probs(q: torch.Tensor, k: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale) of projected queries [B, N, heads*d] and keys [B, K, heads*d], per head:
    [B, heads, N, K], in float32 (as the WebUI's upcast does)."""
    b, n, inner = q.shape
    d = inner // heads
    qh = q.reshape(b, n, heads, d).transpose(1, 2)
    kh = k.reshape(k.shape[0], -1, heads, d).transpose(1, 2)
    with torch.autocast(device_type=q.device.type, enabled=False):
        return (torch.matmul(qh.float(), kh.float().transpose(-1, -2)) * scale).softmax(dim=-1)


def cross_attention_modules(unet: nn.Module) -> list[nn.Module]:
    """The attn2 (cross-attention) children of the UNet's transformer blocks, in forward order."""
    found = []
    for name, module in unet.named_modules():
        if name.endswith("attn2") and all(hasattr(module, a) for a in ("to_q", "to_k", "to_v", "to_out", "heads")):
            found.append(module)
    return found


class AttentionCapture:
    """Wraps attn2 forwards; while `capturing`, layers with the target number of pixels record probabilities."""

    def __init__(self) -> None:
        self._patches = InstancePatches()
        self.active = False
        self.target_pixels = 0
        self.stop_after: int | None = None
        self.stop_on_rise = False
        self.replaying = False
        self.probs: list[torch.Tensor] = []

    # ------------------------------------------------------------------ install / remove
    @property
    def installed(self) -> bool:
        return len(self._patches) > 0

    def install(self, modules: Iterable[nn.Module]) -> None:
        if self.installed:
            raise RuntimeError("attention capture is already installed")
        for module in modules:
            self._patches.patch(module, "forward", lambda original, m=module: self._make_wrapper(m, original))

    def remove(self) -> int:
        """Restore every wrapped forward; returns how many were restored. Safe to call twice."""
        self.active = False
        return self._patches.restore()

    @contextmanager
    def installed_on(self, modules: Iterable[nn.Module]) -> Iterator[AttentionCapture]:
        self.install(modules)
        try:
            yield self
        finally:
            self.remove()

    # ------------------------------------------------------------------ capturing
    @contextmanager
    def capturing(self, pixels: int, stop_after: int | None = None,
                  stop_on_rise: bool = False) -> Iterator[list[torch.Tensor]]:
        """Record head-averaged probabilities [B, N, K] of every cross-attention layer with N == pixels.

        stop_after: raise CaptureComplete once that many layers were recorded. stop_on_rise: raise it at the
        first layer with more pixels than `pixels` after a recorded one (a UNet's way back up past the capture
        resolution: every layer there was seen), for when the number of layers is not known yet."""
        self.probs = []
        self.target_pixels = pixels
        self.stop_after = stop_after
        self.stop_on_rise = stop_on_rise
        self.active = True
        self.replaying = False
        try:
            yield self.probs
        finally:
            self.active = False
            self.stop_after = None
            self.stop_on_rise = False

    @contextmanager
    def replay(self) -> Iterator[None]:
        """For a backward pass through checkpointed blocks: the recomputed layers at the last capture's
        resolution take the explicit path again (so they save the same tensors) but record nothing."""
        self.active, self.replaying = True, True
        try:
            yield
        finally:
            self.active, self.replaying = False, False

    def record(self, probs: torch.Tensor) -> None:
        """Keep one layer's probabilities [B, heads, N, K], averaged over heads; nothing while replaying (the
        recomputation inside a checkpointed block: same ops, nothing recorded). Raises CaptureComplete once
        stop_after layers are in."""
        if self.replaying:
            return
        self.probs.append(probs.mean(dim=1))
        if self.stop_after is not None and len(self.probs) >= self.stop_after:
            raise CaptureComplete

    def _make_wrapper(self, module: nn.Module, original):
        capture = self

        def forward(x, context=None, *args, **kwargs):
            if (capture.stop_on_rise and capture.active and capture.probs and not capture.replaying
                    and not forward.segret_inert and x.shape[1] > capture.target_pixels):
                raise CaptureComplete
            if (
                forward.segret_inert
                or not capture.active
                or context is None
                or args
                or any(_set(v) for k, v in kwargs.items() if k != "transformer_options")
                or x.shape[1] != capture.target_pixels
            ):
                return original(x, context, *args, **kwargs)
            out, probs = explicit_attention(module, x, context)
            capture.record(probs)
            return out

        forward.segret_inert = False
        return forward


def _set(value) -> bool:
    """Whether an extra attention argument changes the result (sgm passes additional_tokens=None and
    n_times_crossframe_attn_in_self=0 by default, Forge value=None and its transformer_options, which only
    carry patch options); a mask or extra tokens send the call to the original."""
    return value is not None and value is not False and not (isinstance(value, int) and value == 0)
