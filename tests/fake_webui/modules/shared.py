from types import SimpleNamespace

from modules.shared_state import State

state = State()
opts = SimpleNamespace(enable_quantization=False, batch_cond_uncond=True, s_min_uncond=0.0)
sd_model = None
