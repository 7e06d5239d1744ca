"""The built-in Lora extension's weight swap (extensions-builtin/Lora/networks.py), reduced to what other
extensions meet: the extension replaces Linear/Conv2d.forward on the classes, and on the first forward of a
layer after the set of networks (or a weight) changed it restores the layer's weight from a backup with
`weight.copy_(backup)` (restore_weights_backup, outside no_grad) and then adds the networks' deltas under
no_grad. Under grad mode, with weights that require grad, that first copy_ raises
"a leaf Variable that requires grad is being used in an in-place operation"."""

from __future__ import annotations

import zlib

import torch

loaded_networks: list[tuple[str, float]] = []  # (name, multiplier), what <lora:name:mult> in the prompt loads
_originals: dict[type, object] = {}


def network_apply_weights(self: torch.nn.Module) -> None:
    layer = getattr(self, "network_layer_name", None)
    if layer is None:
        return
    wanted = tuple(loaded_networks)
    current = getattr(self, "network_current_names", ())
    backup = getattr(self, "network_weights_backup", None)
    if backup is None and wanted != ():
        backup = self.weight.to("cpu", copy=True)
        self.network_weights_backup = backup
    if current != wanted:
        if backup is not None:
            self.weight.copy_(backup)  # the real restore_weights_backup: not under no_grad
        for name, multiplier in wanted:
            g = torch.Generator().manual_seed(zlib.crc32(f"{name}/{layer}".encode()))
            delta = torch.randn(self.weight.shape, generator=g) * 0.05 * multiplier
            with torch.no_grad():
                self.weight.add_(delta.to(self.weight.device, self.weight.dtype))
        self.network_current_names = wanted


def _make_forward(cls):
    original = cls.forward

    def forward(self, *args, **kwargs):
        network_apply_weights(self)
        return original(self, *args, **kwargs)

    return original, forward


def install(model: torch.nn.Module) -> None:
    """assign_network_names_to_compvis_modules + the class-level forward replacement."""
    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            module.network_layer_name = name.replace(".", "_")
    for cls in (torch.nn.Linear, torch.nn.Conv2d):
        if cls not in _originals:
            _originals[cls], cls.forward = _make_forward(cls)


def uninstall(model: torch.nn.Module) -> None:
    """Put the original weights and class forwards back."""
    loaded_networks.clear()
    with torch.no_grad():
        for module in model.modules():
            backup = module.__dict__.pop("network_weights_backup", None)
            if backup is not None:
                module.weight.copy_(backup.to(module.weight.device, module.weight.dtype))
            for attr in ("network_layer_name", "network_current_names"):
                module.__dict__.pop(attr, None)
    for cls, original in _originals.items():
        cls.forward = original
    _originals.clear()


def load_networks(networks: list[tuple[str, float]]) -> None:
    """What activating `<lora:name:multiplier>` prompts does: the wanted set changes, weights swap lazily."""
    loaded_networks[:] = list(networks)
