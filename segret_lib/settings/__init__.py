"""Settings: the validated parameters, their infotext round trip and the layout-box text (no torch, no host)."""
