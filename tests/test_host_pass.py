"""A host's per-pass object: Forge's pass reserves memory and guards the UNet, its close() undoes both; undos run
newest first, once, also when one fails. The A1111 pass has nothing to undo."""

import pytest
import torch
from torch import nn

from segret_lib.hosts.a1111 import WebUIHost
from segret_lib.hosts.forge import ForgeHost, ForgePass
from segret_lib.hosts.generation import Generation
from segret_lib.hosts.host_pass import HostPass
from segret_lib.settings.params import SegretParams
from segret_lib.testing.tiny_models import tiny_unet


def test_close_undoes_newest_first_once_even_when_one_fails():
    done = []
    host_pass = HostPass()
    host_pass.on_close(lambda: done.append("first"))
    host_pass.on_close(lambda: 1 / 0)
    host_pass.on_close(lambda: done.append("last"))
    host_pass.close()
    host_pass.close()
    assert done == ["last", "first"]


class _Model:
    def memory_required(self, shape):
        return 1000 * shape[0]


class _Patcher:
    """Stands for Forge's UnetPatcher: clone() and the extra memory it is asked to keep."""

    def __init__(self) -> None:
        self.model, self.extra = _Model(), 0

    def clone(self):
        return _Patcher()

    def add_extra_preserved_memory_during_sampling(self, n: int) -> None:
        self.extra += n


def _forge_p():
    objects = type("ForgeObjects", (), {})()
    objects.unet = _Patcher()
    sd_model = type("SDModel", (), {"forge_objects": objects})()
    return type("P", (), {"sd_model": sd_model, "batch_size": 2, "width": 64, "height": 64})()


def test_forge_pass_reserves_memory_guards_the_unet_and_the_generation_closes_it():
    unet = tiny_unet("sd1", 0)
    with torch.inference_mode():  # Forge loads its weights under inference mode
        for m in unet.modules():
            for name, p in list(m._parameters.items()):
                if p is not None:
                    m._parameters[name] = nn.Parameter(p.detach().clone(), requires_grad=False)
    originals = dict(unet.named_parameters())
    p = _forge_p()
    previous = p.sd_model.forge_objects.unet
    gen = Generation(SegretParams(enabled=True, concepts=("cat", "dog")))
    gen.host_pass = ForgeHost().begin_pass(p, unet)
    assert isinstance(gen.host_pass, ForgePass) and gen.host_pass.guard is not None
    assert p.sd_model.forge_objects.unet is not previous and p.sd_model.forge_objects.unet.extra == 3 * 2000
    assert not any(param.is_inference() for param in unet.parameters())
    gen.end_pass()
    assert gen.host_pass is None and p.sd_model.forge_objects.unet is previous
    assert all(param is originals[name] for name, param in unet.named_parameters())


def test_forge_pass_that_fails_half_way_undoes_what_it_did():
    p = _forge_p()
    previous = p.sd_model.forge_objects.unet

    class Broken(nn.Module):
        """Passes the weight check (the first walk over its modules), then fails while the guard installs."""

        walks = 0

        def modules(self):
            Broken.walks += 1
            yield self
            if Broken.walks > 1:
                assert p.sd_model.forge_objects.unet is not previous  # the memory was reserved by now
                raise RuntimeError("cannot walk the model")

    with pytest.raises(RuntimeError, match="cannot walk"):
        ForgeHost().begin_pass(p, Broken())
    assert Broken.walks == 2
    assert p.sd_model.forge_objects.unet is previous  # the memory reservation was undone


def test_a1111_pass_has_nothing_to_undo():
    host_pass = WebUIHost().begin_pass(None, tiny_unet("sd1", 0))
    assert isinstance(host_pass, HostPass)
    host_pass.close()
