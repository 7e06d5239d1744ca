import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "tests" / "fake_webui"):  # the fake WebUI `modules` package for the adapter tests
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def text_encoder():
    from segret_lib.testing.tiny_models import TinyTextEncoder

    return TinyTextEncoder()


@pytest.fixture
def unet():
    from segret_lib.testing.tiny_models import tiny_unet

    return tiny_unet("sd1")


@pytest.fixture
def ldm(unet):
    from segret_lib.testing.tiny_models import TinyLDM

    return TinyLDM(unet)
