"""Load the real third-party components the tests, the benchmarks and quality/ use, without their unrelated
import-time dependencies.

k-diffusion's package __init__ imports its training/evaluation code (torchvision, scikit-image, clean-fid,
CLIP); open_clip's imports torchvision and timm. PyPI's torchvision does not load beside the CPU build of
torch used here, so the samplers (k_diffusion.sampling/external) and the CLIP BPE tokenizer
(open_clip/tokenizer.py) are imported directly from the installed packages. Their code runs unchanged.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from functools import cache
from pathlib import Path

from ..engine.tokens import PromptTokens


def _bare_package(name: str) -> types.ModuleType:
    """Register package `name` without running its __init__, so its submodules import normally."""
    if name in sys.modules and hasattr(sys.modules[name], "__path__"):
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{name} is not installed; run the setup command in README.md")
    pkg = types.ModuleType(name)
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec
    sys.modules[name] = pkg
    return pkg


def _torchvision_placeholder() -> None:
    """k_diffusion.utils imports torchvision's PIL converters at module level but the samplers never call
    them; when torchvision is absent, an empty module satisfies that import (any use would fail loudly)."""
    if importlib.util.find_spec("torchvision") is not None:
        return
    for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
        sys.modules.setdefault(name, types.ModuleType(name))


@cache
def k_diffusion():
    """(k_diffusion.sampling, k_diffusion.external) from PyPI k-diffusion."""
    _bare_package("k_diffusion")
    _torchvision_placeholder()
    sampling = importlib.import_module("k_diffusion.sampling")
    external = importlib.import_module("k_diffusion.external")
    return sampling, external


@cache
def clip_tokenizer():
    """The CLIP BPE SimpleTokenizer shipped by open-clip-torch (with its bundled vocabulary)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("open-clip-torch is not installed; run the setup command in README.md")
    path = Path(next(iter(spec.submodule_search_locations))) / "tokenizer.py"
    mod_spec = importlib.util.spec_from_file_location("open_clip_bpe_tokenizer", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module.SimpleTokenizer()


class ClipWords:
    """CLIP BPE encode/decode and prompt tokens for a text encoder (call init_clip_words() in __init__)."""

    def init_clip_words(self) -> None:
        self.tokenizer = clip_tokenizer()
        self.bos = self.tokenizer.encoder["<start_of_text>"]
        self.eos = self.tokenizer.encoder["<end_of_text>"]

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def prompt_tokens(self, prompt: str) -> PromptTokens:
        return PromptTokens.from_ids(self.encode(prompt), self.bos, self.eos)
