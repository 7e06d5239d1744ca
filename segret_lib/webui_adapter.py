"""AUTOMATIC1111 WebUI glue: the AlwaysOn script, per-generation hooks, infotext, API args, XYZ axes.

This is the only module of segret_lib that imports the WebUI (`modules`). Everything it installs is put
back at the end of each sampling pass, in postprocess, and in p.close() (which the WebUI runs even when a
generation fails), so no hook outlives a generation.
"""

from __future__ import annotations

import html
import json
import logging
import re
from collections.abc import Sequence
from typing import Any

import gradio as gr
import torch
from modules import prompt_parser, script_callbacks, scripts, shared
from modules.ui_components import InputAccordion

from .capture import cross_attention_modules
from .checkpointing import unet_blocks
from .params import INFOTEXT_PREFIX, UI_FIELDS, ParamError, SegretParams
from .patching import InstancePatches
from .schedule import evaluation_pattern
from .session import PassInfo, SegretSession
from .tokens import PromptTokens, map_concepts
from .visualize import session_grids

log = logging.getLogger("segret")

TITLE = "A-STAR"
ACCORDION_LABEL = "A-STAR (segregation & retention)"
OVERRIDES_ATTR = "segret_overrides"  # dict set on p by XYZ-plot axes
WARNINGS_KEY = f"{INFOTEXT_PREFIX} warnings"
RESULT_KEY = f"{INFOTEXT_PREFIX} result"
_RE_AND = re.compile(r"\bAND\b")
_RE_WEIGHT = re.compile(r"^(.*?)(?::\s*[-+]?\d*\.?\d+\s*)?$", re.S)

TIPS = {
    "enabled": "Keep the concepts below apart (segregation) and stop them from fading (retention) while sampling.",
    "concepts": "Words or phrases from the prompt, comma-separated (e.g. 'cat, dog' or 'red car, traffic light'). "
                "Click a chip below to add or remove a word.",
    "seg_weight": "Weight of the segregation loss: how strongly overlapping attention of different concepts "
                  "is pushed apart. 0 turns it off.",
    "ret_weight": "Weight of the retention loss: how strongly each concept keeps the region it attended to at the "
                  "previous step. 0 turns it off.",
    "step_size": "Scale of the latent update (alpha = step size x sqrt(1 -> 0.5) over the steps). "
                 "Higher is stronger; too high gives artefacts.",
    "last_step": "Last sampling step that is refined (0 = every step). Refining only the first steps is faster "
                 "but concepts can fade again later.",
    "threshold_mode": "How the retention mask is made from the previous step's map: a fraction of its maximum, "
                      "or Otsu's automatic threshold.",
    "threshold": "Retention mask = attention >= this fraction of the map's maximum (fraction mode only).",
    "iterative": "At steps 1, 11 and 21 repeat the update until the loss is below 0.2 (at most 20 times). Slower.",
    "show_maps": "Add a grid to the gallery with each concept's attention map before and after refinement "
                 "at a few steps.",
    "hires": "Also refine the hires-fix second pass (off by default: the first pass already fixes the layout).",
    "low_vram": "Recompute the UNet's activations in the refinement's backward pass instead of keeping them: "
                "almost no VRAM beyond normal sampling, each refined step about 1.5x slower. Switched on by itself "
                "if the GPU runs out of memory.",
}


def tooltip_holder(tab: str) -> str:
    """A hidden element carrying every control's tooltip by elem_id; javascript/segret.js turns them into
    hover titles (the accordion's under its own id)."""
    tips = {f"segret_{tab}": TIPS["enabled"], **{f"segret_{tab}_{name}": TIPS[name] for name in UI_FIELDS[1:]}}
    return f'<span class="segret-tips" hidden data-tips="{html.escape(json.dumps(tips), quote=True)}"></span>'


# ---------------------------------------------------------------------------------------------- arguments
def params_from_args(args: Sequence[Any], overrides: dict[str, Any] | None = None) -> SegretParams:
    """Script args -> SegretParams. Accepts the UI's positional values, or one dict (HTTP API).

    Raises ParamError with a message that names the bad value.
    """
    if args and isinstance(args[0], dict):  # API: {"args": [{...}]}; the UI defaults after it are ignored
        values = dict(args[0])
        values.setdefault("enabled", True)
    elif len(args) == 0:
        values = {"enabled": False}
    else:
        if len(args) > len(UI_FIELDS):
            raise ParamError(f"A-STAR takes at most {len(UI_FIELDS)} args ({', '.join(UI_FIELDS)}), got {len(args)}")
        values = dict(zip(UI_FIELDS, args, strict=False))
    if overrides:
        values.update(overrides)
    return SegretParams.create(**values)


# ---------------------------------------------------------------------------------------------- tokens
def text_encoder(sd_model) -> Any:
    """The object with the WebUI's tokenize/tokenize_line (SDXL: the first, CLIP-L, embedder)."""
    model = sd_model.cond_stage_model
    if hasattr(model, "tokenize_line"):
        return model
    for embedder in getattr(model, "embedders", []):
        if hasattr(embedder, "tokenize_line"):
            return embedder
    raise RuntimeError("this model's text encoder has no WebUI tokenizer (tokenize_line)")


def first_subprompt(prompt: str, steps: int) -> str:
    """The text the first conditioning of a prompt is made from: before any AND, at the first schedule."""
    text = _RE_AND.split(prompt)[0]
    text = _RE_WEIGHT.match(text.strip()).group(1)
    try:
        schedules = prompt_parser.get_learned_conditioning_prompt_schedules([text], max(int(steps), 1))
        return schedules[0][0][1]
    except Exception:  # malformed prompt-editing syntax: the WebUI falls back to the raw text too
        return text


def prompt_tokens(encoder, prompt: str) -> PromptTokens:
    """First 77-token chunk as the WebUI builds it (emphasis, embeddings and BREAK handled by the WebUI).

    A textual-inversion embedding takes placeholder ids in the chunk and a fix (offset, embedding) that puts
    its vectors at offset+1.. in the context; it becomes a named span, so its name works as a concept.
    """
    chunks, _ = encoder.tokenize_line(prompt)
    ids = [int(t) for t in chunks[0].tokens] if chunks else []
    end = int(getattr(encoder, "id_end", ids[-1] if ids else 0))
    spans = []
    for offset, embedding in (chunks[0].fixes or []) if chunks else []:
        length = int(getattr(embedding, "vectors", 0) or 0)
        name = getattr(embedding, "name", None)
        if name and length > 0:
            spans.append((str(name), tuple(range(offset + 1, offset + 1 + length))))
    n_real = next((i - 1 for i, t in enumerate(ids[1:], start=1) if t == end), max(len(ids) - 2, 0))
    later = [int(t) for c in chunks[1:] for t in c.tokens[1:] if int(t) != end]
    return PromptTokens(tuple(ids), n_real, tuple(later), tuple(spans))


def encode_word(encoder, word: str) -> list[int]:
    return [int(t) for t in encoder.tokenize([word])[0]]


def decode_tokens(encoder):
    """A token decoder for error messages, if the encoder exposes one."""
    tok = getattr(getattr(encoder, "wrapped", None), "tokenizer", None)
    if tok is not None and hasattr(tok, "decode"):
        return lambda ids: tok.decode(ids)
    return None


# ---------------------------------------------------------------------------------------------- one generation
class Generation:
    """State of one generation (all batches, both passes)."""

    def __init__(self, params: SegretParams) -> None:
        self.params = params
        self.warnings: list[str] = []
        self.session: SegretSession | None = None
        self.sampler_patches = InstancePatches()
        self.grids: list = []
        self.summaries: list[str] = []
        # what out-of-memory fallbacks decided carries over to the next batch of the same generation
        self.chunk_size = 0
        self.low_vram = params.low_vram
        self.out_of_memory = False  # an earlier batch ran out of memory even with every fallback

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            print(f"[A-STAR] {message}")

    def end_pass(self) -> None:
        self.sampler_patches.restore()
        if self.session is not None:
            self.session.end_pass()

    def end_batch(self) -> None:
        self.end_pass()
        if self.session is not None:
            self.session.close()
            self.chunk_size, self.low_vram = self.session.chunk_size, self.session.low_vram
            self.out_of_memory = self.out_of_memory or self.session.out_of_memory
            for w in self.session.warnings:
                self.warn(w)
            if self.params.show_maps:
                self.grids.extend(session_grids(self.session))
            summary = self.session.summary()
            if summary:
                self.summaries.append(summary)
            self.session = None

    def close(self) -> None:
        self.end_batch()


class SegretScript(scripts.Script):
    """A-STAR: test-time attention segregation and retention."""

    sorting_priority = 20

    def __init__(self) -> None:
        super().__init__()
        self.gen: Generation | None = None

    def title(self) -> str:
        return TITLE

    def show(self, is_img2img: bool):
        return scripts.AlwaysVisible

    # ------------------------------------------------------------------ UI
    def ui(self, is_img2img: bool):
        tab = "img2img" if is_img2img else "txt2img"
        d = SegretParams()
        with InputAccordion(False, label=ACCORDION_LABEL, elem_id=f"segret_{tab}") as enabled:
            concepts = gr.Textbox(label="Concepts", placeholder="cat, dog", lines=1, elem_id=f"segret_{tab}_concepts",
                                  info=TIPS["concepts"])
            gr.HTML(tooltip_holder(tab), elem_id=f"segret_{tab}_chips", elem_classes=["segret-chips"])
            with gr.Row():
                seg_weight = gr.Slider(0.0, 5.0, d.seg_weight, step=0.05, label="Segregation weight",
                                       elem_id=f"segret_{tab}_seg_weight")
                ret_weight = gr.Slider(0.0, 5.0, d.ret_weight, step=0.05, label="Retention weight",
                                       elem_id=f"segret_{tab}_ret_weight")
            with gr.Row():
                step_size = gr.Slider(0.0, 100.0, d.step_size, step=0.5, label="Step size",
                                      elem_id=f"segret_{tab}_step_size")
                last_step = gr.Slider(0, 150, d.last_step, step=1, label="Last refined step (0 = all)",
                                      elem_id=f"segret_{tab}_last_step")
            with gr.Row():
                threshold_mode = gr.Radio(["fraction", "otsu"], value=d.threshold_mode, label="Retention mask",
                                          elem_id=f"segret_{tab}_threshold_mode")
                threshold = gr.Slider(0.05, 0.95, d.threshold, step=0.05, label="Mask threshold",
                                      elem_id=f"segret_{tab}_threshold")
            with gr.Row():
                iterative = gr.Checkbox(d.iterative, label="Iterative refinement", elem_id=f"segret_{tab}_iterative")
                show_maps = gr.Checkbox(d.show_maps, label="Show attention maps", elem_id=f"segret_{tab}_show_maps")
                hires = gr.Checkbox(d.hires, label="Refine hires fix pass", elem_id=f"segret_{tab}_hires",
                                    visible=not is_img2img)
                low_vram = gr.Checkbox(d.low_vram, label="Low VRAM", elem_id=f"segret_{tab}_low_vram")
        components = {
            "enabled": enabled, "concepts": concepts, "seg_weight": seg_weight, "ret_weight": ret_weight,
            "step_size": step_size, "last_step": last_step, "threshold_mode": threshold_mode,
            "threshold": threshold, "iterative": iterative, "show_maps": show_maps, "hires": hires,
            "low_vram": low_vram,
        }
        key = f"{INFOTEXT_PREFIX} "
        self.infotext_fields = [
            (enabled, lambda d: key + "concepts" in d),
            (concepts, key + "concepts"),
            (seg_weight, key + "seg weight"),
            (ret_weight, key + "ret weight"),
            (step_size, key + "step size"),
            (last_step, key + "last step"),
            (threshold_mode, lambda d: _threshold_mode_from(d.get(key + "threshold"))),
            (threshold, lambda d: _threshold_from(d.get(key + "threshold"))),
            (iterative, lambda d: True if key + "iterative" in d else None),
            (hires, lambda d: True if key + "hires" in d else None),
        ]
        self.paste_field_names = [key + n for n in ("concepts", "seg weight", "ret weight", "step size", "last step",
                                                    "threshold")]
        return [components[name] for name in UI_FIELDS]

    # ------------------------------------------------------------------ generation lifecycle
    def process(self, p, *args) -> None:
        self._cleanup()  # a previous generation that died before postprocess
        # X/Y/Z plot cells are shallow copies of one p and share extra_generation_params: drop our old entries
        for key in [k for k in p.extra_generation_params if str(k).startswith(f"{INFOTEXT_PREFIX} ")]:
            del p.extra_generation_params[key]
        try:
            params = params_from_args(args, getattr(p, OVERRIDES_ATTR, None))
        except ParamError as e:
            if _looks_enabled(args):
                print(f"[A-STAR] not applied: {e}")
                p.extra_generation_params[WARNINGS_KEY] = f"not applied: {e}"
            return
        if not params.enabled:
            return
        self.gen = Generation(params)
        p.extra_generation_params.update(params.to_infotext())
        _chain_close(p, self._cleanup)

    def process_before_every_sampling(self, p, *args, **kwargs) -> None:
        gen = self.gen
        if gen is None:
            return
        gen.end_pass()
        hires = bool(getattr(p, "is_hr_pass", False))
        if hires and not gen.params.hires:
            return
        try:
            self._begin_pass(p, gen, hires, kwargs.get("x"))
        except Exception as e:  # never break the generation
            log.exception("A-STAR setup failed")
            gen.warn(f"not applied to this pass: {type(e).__name__}: {e}")
            gen.end_pass()
        if gen.warnings:
            p.extra_generation_params[WARNINGS_KEY] = "; ".join(gen.warnings)

    def postprocess_batch(self, p, *args, **kwargs) -> None:
        gen = self.gen
        if gen is None:
            return
        gen.end_batch()
        if gen.warnings:
            p.extra_generation_params[WARNINGS_KEY] = "; ".join(gen.warnings)
        if gen.summaries:
            p.extra_generation_params[RESULT_KEY] = " | ".join(gen.summaries)

    def postprocess(self, p, processed, *args) -> None:
        gen = self.gen
        if gen is None:
            return
        gen.close()
        if gen.grids:
            info = processed.infotexts[0] if getattr(processed, "infotexts", None) else ""
            processed.images.extend(gen.grids)
            if getattr(processed, "infotexts", None) is not None:
                processed.infotexts.extend([info] * len(gen.grids))
        self._cleanup()

    def _cleanup(self) -> None:
        if self.gen is not None:
            self.gen.close()
            self.gen = None

    # ------------------------------------------------------------------ one sampling pass
    def _begin_pass(self, p, gen: Generation, hires: bool, x: torch.Tensor | None) -> None:
        if gen.out_of_memory:
            return
        sampler = p.sampler
        prompts = list(getattr(p, "hr_prompts", None) or p.prompts) if hires else list(p.prompts)
        steps = int((getattr(p, "hr_second_pass_steps", 0) or p.steps) if hires else p.steps)
        encoder = text_encoder(p.sd_model)
        decode = decode_tokens(encoder)
        concepts, n_real = [], []
        for prompt in prompts:
            pt = prompt_tokens(encoder, first_subprompt(prompt, steps))
            found, warnings = map_concepts(pt, gen.params.concepts, lambda w: encode_word(encoder, w), decode)
            for w in warnings:
                gen.warn(w)
            concepts.append(found)
            n_real.append(pt.n_real)
        if not any(concepts):
            gen.warn("none of the concepts is in the prompt; nothing to refine")
            return
        if len(gen.params.concepts) > 1 and all(len(c) < 2 for c in concepts if c) and gen.params.ret_weight == 0:
            gen.warn("segregation needs two concepts in the prompt")
        if gen.session is None:
            unet = p.sd_model.model.diffusion_model
            gen.session = SegretSession(gen.params, cross_attention_modules(unet), concepts, n_real,
                                        chunk_size=gen.chunk_size, blocks=unet_blocks(unet), low_vram=gen.low_vram)
        else:
            gen.session.concepts, gen.session.n_real = concepts, n_real
        latent = tuple(x.shape[-2:]) if x is not None else (p.height // 8, p.width // 8)
        config = getattr(sampler, "config", None)
        name = getattr(config, "name", None) or getattr(p, "sampler_name", "") or ""
        second = getattr(config, "options", {}).get("second_order") if config is not None else None
        timestep = type(sampler).__name__ == "CompVisSampler" or hasattr(sampler, "alphas_cumprod")
        info = PassInfo(latent, steps, "timestep" if timestep else "sigma", evaluation_pattern(name, second),
                        "hires pass" if hires else "first pass")
        gen.session.begin_pass(info)
        self._hook_sampler(sampler, gen)

    def _hook_sampler(self, sampler, gen: Generation) -> None:
        session = gen.session
        denoiser = sampler.model_wrap_cfg
        first_call = [True]

        def make_forward(original):
            def forward(x, sigma, *args, **kwargs):
                if not forward.segret_inert and not (shared.state.interrupted or shared.state.skipped):
                    if first_call[0]:
                        first_call[0] = False
                        session.set_total_steps(_pass_steps(denoiser, session.current.total_steps))
                    cond = kwargs.get("cond", args[1] if len(args) > 1 else None)
                    image_cond = kwargs.get("image_cond", args[4] if len(args) > 4 else None)
                    session.before_model_call(x, sigma, _unet_runner(denoiser, cond, image_cond))
                return original(x, sigma, *args, **kwargs)

            return forward

        def make_callback(original):
            def callback_state(d):
                if not callback_state.segret_inert:
                    session.on_sampler_callback()
                return original(d)

            return callback_state

        gen.sampler_patches.patch(denoiser, "forward", make_forward)
        gen.sampler_patches.patch(sampler, "callback_state", make_callback)


def _pass_steps(denoiser, fallback: int) -> int:
    steps = getattr(shared.state, "sampling_steps", 0) or getattr(denoiser, "steps", 0) or fallback
    return int(steps)


def _unet_runner(denoiser, cond, image_cond):
    """run_unet(x, sigma, rows): the conditional model on images `rows`, as the CFG denoiser would call it."""

    def run(x, sigma, rows):
        conds_list, tensor = prompt_parser.reconstruct_multicond_batch(cond, denoiser.step)
        idx = [conds_list[r][0][0] for r in rows]
        ic = image_cond[list(rows)] if image_cond is not None else None
        if isinstance(tensor, dict):
            c = {k: v[idx] for k, v in tensor.items()}
            c["c_concat"] = [ic]
        else:
            c = {"c_crossattn": [tensor[idx]], "c_concat": [ic]}
        return denoiser.inner_model(x, sigma, cond=c)

    return run


def _chain_close(p, cleanup) -> None:
    """Run our cleanup in p.close(), which the WebUI calls even when the generation raised."""
    original = p.close

    def close(*args, **kwargs):
        try:
            cleanup()
        except Exception:  # cleanup must never stop the WebUI from closing p
            log.exception("A-STAR cleanup failed")
        return original(*args, **kwargs)

    p.close = close


def _looks_enabled(args: Sequence[Any]) -> bool:
    if args and isinstance(args[0], dict):
        return str(args[0].get("enabled", True)).lower() not in ("false", "0", "no", "off")
    return bool(args and args[0])


def _threshold_mode_from(value) -> str | None:
    if value is None:
        return None
    return "otsu" if str(value).strip().lower() == "otsu" else "fraction"


def _threshold_from(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------- XYZ plot
XYZ_AXES = (
    ("[A-STAR] Segregation weight", "seg_weight", float),
    ("[A-STAR] Retention weight", "ret_weight", float),
    ("[A-STAR] Step size", "step_size", float),
    ("[A-STAR] Last refined step", "last_step", int),
)


def _xyz_apply(field: str):
    def apply(p, value, _values):
        p_over = dict(getattr(p, OVERRIDES_ATTR, None) or {})
        p_over[field] = value
        setattr(p, OVERRIDES_ATTR, p_over)

    return apply


def add_xyz_axes() -> bool:
    """Register our axes with the built-in X/Y/Z plot script; returns whether it was found."""
    for data in scripts.scripts_data:
        if data.script_class.__module__ in ("xyz_grid.py", "scripts.xyz_grid") and hasattr(data.module, "AxisOption"):
            xyz = data.module
            break
    else:
        return False
    known = {getattr(o, "label", None) for o in xyz.axis_options}
    for label, field, kind in XYZ_AXES:
        if label not in known:
            xyz.axis_options.append(xyz.AxisOption(label, kind, _xyz_apply(field)))
    return True


script_callbacks.on_before_ui(add_xyz_axes)
