"""Which UNet weight storages the refinement cannot differentiate through yet. Host-free (it goes by the weights'
classes), so it runs on Forge's own classes without importing Forge (tests/integration/forge_gguf_check.py)."""

from __future__ import annotations

from torch import nn

UNSUPPORTED_LABEL = "GGUF / NF4 / FP4 weights"


def is_unsupported(param: nn.Parameter | None) -> bool:
    """A GGUF (Forge's ParameterGGUF) or bitsandbytes 4-bit (Params4bit, bnb) parameter."""
    kind = type(param).__name__
    return param is not None and ("GGUF" in kind or "4bit" in kind or "bnb" in kind.lower())


def unsupported_weights(unet: nn.Module) -> str:
    """UNSUPPORTED_LABEL if any of the UNet's parameters is stored that way, else ''."""
    found = any(is_unsupported(p) for m in unet.modules() for p in m._parameters.values())
    return UNSUPPORTED_LABEL if found else ""


def refusal(unet: nn.Module) -> str:
    """The message A-STAR gives for such a UNet (it then renders the image without refinement), or ''."""
    label = unsupported_weights(unet)
    return f"{label} are not supported by A-STAR in Forge yet; the image is rendered without it" if label else ""
