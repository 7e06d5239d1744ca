"""The engine: attention capture, maps, losses, the latent update, schedules, the per-generation session (torch only,
no host, no gradio)."""
