"""Refinement inside real k-diffusion samplers (Euler, DPM++ 2M, Heun, DPM++ 2S a) with the tiny ldm UNet."""

import pytest
import torch

from segret_lib.engine import checkpointing
from segret_lib.engine.capture import cross_attention_modules
from segret_lib.engine.checkpointing import unet_blocks
from segret_lib.engine.foreign_hooks import foreign_forward
from segret_lib.engine.schedule import StepTracker, evaluation_pattern, snapshot_steps
from segret_lib.engine.session import PassInfo, SegretSession
from segret_lib.render.visualize import session_grids
from segret_lib.testing.tiny_models import tiny_unet
from tests.helpers import make_rig

PROMPTS = ["a cat and a dog"]


@pytest.fixture(scope="module")
def rig():
    return make_rig()


def forwards(unet):
    return [m.__dict__.get("forward") for m in cross_attention_modules(unet)]


def block_forwards(unet):
    return [b.__dict__.get("forward") for b in unet_blocks(unet)]


@pytest.mark.parametrize(
    ("sampler", "pattern"),
    [("sample_euler", "first_order"), ("sample_dpmpp_2m", "first_order"), ("sample_heun", "second_order"),
     ("sample_dpmpp_2s_ancestral", "second_order"), ("sample_lms", "first_order")],
)
def test_refines_once_per_step_and_changes_the_result(rig, sampler, pattern):
    steps = 5
    plain, plain_model = rig.sample(PROMPTS, sampler, steps)
    session = rig.session(PROMPTS, step_size=200.0)
    refined, model = rig.sample(PROMPTS, sampler, steps, session=session, pattern=pattern)
    evals = len(model.calls)
    assert evals == len(plain_model.calls) == (steps if pattern == "first_order" else 2 * steps - 1)
    refined_calls = [i for i, (_, r) in enumerate(model.calls) if r]
    assert len(refined_calls) == steps
    # the refinement happens at the first evaluation of each step: the sampler's schedule sigmas
    sigmas = rig.denoiser.get_sigmas(steps)
    assert [model.calls[i][0] for i in refined_calls] == pytest.approx(sigmas[:-1].tolist(), rel=1e-5)
    assert len(session.passes[0].results) == steps
    assert torch.isfinite(refined).all()
    assert (refined - plain).abs().max() > 1e-4
    assert forwards(rig.unet) == [None] * 7  # every hook removed


def test_shift_reaches_the_sampler_trajectory(rig):
    """One Euler step: the output must equal an Euler step taken from the shifted latent x + delta."""
    session = rig.session(PROMPTS, step_size=500.0, last_step=1)
    refined, model = rig.sample(PROMPTS, "sample_euler", steps=1, session=session)
    sigmas = rig.denoiser.get_sigmas(1)
    x0 = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    # recover the shift from an independent refinement of the same latent
    check = rig.session(PROMPTS, step_size=500.0, last_step=1)
    check.begin_pass(PassInfo((32, 32), 1))
    shifted = x0.clone()
    with torch.no_grad():
        check.before_model_call(shifted, sigmas[:1], model.run_unet)
    check.close()
    delta = shifted - x0
    assert delta.abs().max() > 1e-3
    plain_model = type(model)(model.denoiser, model.cond, model.uncond, model.scale)
    with torch.no_grad():
        d_shifted = plain_model(shifted, sigmas[:1])
        d_plain = plain_model(x0, sigmas[:1])
    dt = sigmas[1] - sigmas[0]
    from_shifted = shifted + (shifted - d_shifted) / sigmas[0] * dt
    from_plain = x0 + (x0 - d_plain) / sigmas[0] * dt
    torch.testing.assert_close(refined, from_shifted, rtol=1e-4, atol=1e-4)
    assert (refined - from_plain).abs().max() > 10 * (refined - from_shifted).abs().max()


def test_batch_refines_each_image_independently(rig):
    prompts = ["a cat and a dog", "a dog beside a cat"]
    sigma = rig.denoiser.get_sigmas(10)[2:3]
    x = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(5)) * sigma
    cond = rig.encoder(prompts)

    def run_for(rows_map):
        return lambda xm, s, rows: rig.denoiser(xm, s, cond={"c_crossattn": [cond[[rows_map[r] for r in rows]]]})

    batch = rig.session(prompts)
    batch.begin_pass(PassInfo((32, 32), 10))
    xb = x.clone()
    with torch.no_grad():
        res = batch.before_model_call(xb, sigma.expand(2), run_for({0: 0, 1: 1}))
    batch.close()
    assert batch.concepts[1][0].positions == (5,) and batch.concepts[1][1].positions == (2,)
    losses = []
    for i, prompt in enumerate(prompts):
        single = rig.session([prompt])
        single.begin_pass(PassInfo((32, 32), 10))
        xi = x[i:i + 1].clone()
        with torch.no_grad():
            losses.append(single.before_model_call(xi, sigma, run_for({0: i})).loss)
        single.close()
        torch.testing.assert_close(xb[i:i + 1], xi, rtol=1e-4, atol=1e-5)
    assert res.loss == pytest.approx(sum(losses), rel=1e-5)


def test_chunked_refinement_equals_whole_batch(rig):
    prompts = ["a cat and a dog", "a dog beside a cat"]
    whole = rig.session(prompts)
    out_whole, _ = rig.sample(prompts, steps=3, session=whole)
    one = rig.session(prompts)
    one.chunk_size = 1
    out_one, _ = rig.sample(prompts, steps=3, session=one)
    torch.testing.assert_close(out_whole, out_one, rtol=1e-4, atol=1e-4)


def test_early_exit_gives_the_same_result(rig):
    a = rig.session(PROMPTS, early_exit=True)
    out_a, _ = rig.sample(PROMPTS, steps=3, session=a)
    b = rig.session(PROMPTS, early_exit=False)
    out_b, _ = rig.sample(PROMPTS, steps=3, session=b)
    torch.testing.assert_close(out_a, out_b, rtol=1e-5, atol=1e-5)


def test_last_step_limits_refinement(rig):
    session = rig.session(PROMPTS, last_step=2)
    _, model = rig.sample(PROMPTS, steps=6, session=session)
    assert [r for _, r in model.calls] == [True, True, False, False, False, False]


def test_nan_gradient_warns_and_image_still_generates(rig):
    session = rig.session(PROMPTS)
    attn = cross_attention_modules(rig.unet)[3]

    def poison(module, args, out):
        return out * float("nan") if torch.is_grad_enabled() else out

    handle = attn.to_k.register_forward_hook(poison)
    try:
        out, _ = rig.sample(PROMPTS, steps=3, session=session)
    finally:
        handle.remove()
    plain, _ = rig.sample(PROMPTS, steps=3)
    assert any("non-finite" in w for w in session.warnings)
    torch.testing.assert_close(out, plain)  # no update was applied
    assert forwards(rig.unet) == [None] * 7


def test_out_of_memory_during_refinement_falls_back_then_switches_off(rig):
    prompts = ["a cat and a dog", "a dog and a cat"]
    session = rig.session(prompts)
    hits = []

    def oom(module, args):
        if torch.is_grad_enabled():
            hits.append(args[0].shape[0])
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    handle = rig.unet.input_blocks[0].register_forward_pre_hook(oom)
    try:
        out, _ = rig.sample(prompts, steps=4, session=session)
    finally:
        handle.remove()
    assert torch.isfinite(out).all()
    assert hits == [2, 1, 1]  # whole batch, then one image at a time, then low VRAM, then off
    assert session.disabled_reason and "out of memory" in session.disabled_reason
    assert any("one image at a time" in w for w in session.warnings)
    assert any("low VRAM" in w for w in session.warnings) and session.low_vram
    assert forwards(rig.unet) == [None] * 7
    assert block_forwards(rig.unet) == [None] * len(unet_blocks(rig.unet))


@pytest.mark.parametrize("early_exit", [True, False])
@pytest.mark.parametrize("sampler", ["sample_euler", "sample_heun"])
def test_low_vram_refines_exactly_like_the_normal_pass(rig, sampler, early_exit, monkeypatch):
    """Checkpointed blocks recompute their activations in the backward pass; the update must not change."""
    prompts = ["a cat and a dog", "a dog beside a cat"]
    pattern = "second_order" if sampler == "sample_heun" else "first_order"
    checkpointed_calls = []
    real_checkpoint = checkpointing.checkpoint

    def counting_checkpoint(fn, *args, **kwargs):
        checkpointed_calls.append(1)
        return real_checkpoint(fn, *args, **kwargs)

    monkeypatch.setattr(checkpointing, "checkpoint", counting_checkpoint)
    runs = {}
    for low_vram in (False, True):
        checkpointed_calls.clear()
        session = rig.session(prompts, low_vram=low_vram, early_exit=early_exit, step_size=60.0)
        out, _ = rig.sample(prompts, sampler=sampler, steps=4, session=session, pattern=pattern)
        runs[low_vram] = (out, [r.loss for r in session.passes[0].results], session)
        assert (len(checkpointed_calls) > 0) == low_vram  # blocks ran under torch.utils.checkpoint
    (plain_out, plain_losses, _), (low_out, low_losses, low) = runs[False], runs[True]
    assert low.low_vram and not low.warnings
    assert len(low_losses) == 4
    torch.testing.assert_close(low_losses, plain_losses, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(low_out, plain_out, rtol=1e-4, atol=1e-5)
    without, _ = rig.sample(prompts, sampler=sampler, steps=4)
    assert (low_out - without).abs().max() > 1e-4  # the refinement did move the result
    assert forwards(rig.unet) == [None] * 7
    assert block_forwards(rig.unet) == [None] * len(unet_blocks(rig.unet))


def test_low_vram_needs_the_unet_blocks(rig):
    session = rig.session(PROMPTS, low_vram=True)
    assert session.low_vram
    bare = SegretSession(session.params, session.modules, session.concepts, session.keys)
    assert not bare.low_vram  # nothing to checkpoint: the normal pass


def test_unexpected_error_in_refinement_switches_off_and_image_generates(rig):
    session = rig.session(PROMPTS)

    def broken(module, args):
        if torch.is_grad_enabled():
            raise ValueError("shape mismatch from another extension")

    handle = rig.unet.middle_block.register_forward_pre_hook(broken)
    try:
        out, _ = rig.sample(PROMPTS, steps=3, session=session)
    finally:
        handle.remove()
    plain, _ = rig.sample(PROMPTS, steps=3)
    torch.testing.assert_close(out, plain)
    assert "ValueError: shape mismatch" in session.disabled_reason
    assert session.warnings == [session.disabled_reason]
    assert forwards(rig.unet) == [None] * 7


def test_gradient_checkpointed_unet_is_reported_not_silently_ignored():
    """ldm's use_checkpoint runs blocks under no_grad in the forward: the captured maps have no graph."""
    rig = make_rig()
    rig.unet = tiny_unet("sd1", use_checkpoint=True)
    rig.ldm.model.diffusion_model = rig.unet
    session = rig.session(PROMPTS)
    out, _ = rig.sample(PROMPTS, steps=3, session=session)
    assert session.disabled_reason.startswith("the attention maps carry no gradient")
    assert session.warnings == [session.disabled_reason] and session.passes[0].results == []
    assert torch.isfinite(out).all()
    assert forwards(rig.unet) == [None] * 7


def _encoder_without_grad_forward(unet):
    """A forward set on the UNet instance the way sd-webui-controlnet's UnetHook sets one: the class's forward
    under no_grad (its encoder always is; after a unit's ending step nothing adds a residual with a graph)."""
    original = type(unet).forward

    def controlled_forward(self, x, timesteps=None, context=None, **kwargs):
        with torch.no_grad():
            return original(self, x, timesteps=timesteps, context=context, **kwargs)

    return controlled_forward.__get__(unet, type(unet))


def test_a_foreign_unet_forward_without_grad_is_named_in_the_message():
    rig = make_rig()
    rig.unet.forward = _encoder_without_grad_forward(rig.unet)
    session = rig.session(PROMPTS)
    out, _ = rig.sample(PROMPTS, steps=3, session=session)
    reason = session.disabled_reason
    assert reason.startswith("the attention maps carry no gradient: another extension replaced the UNet's forward")
    assert "_encoder_without_grad_forward.<locals>.controlled_forward" in reason and "at step 1" in reason
    assert session.warnings == [reason] and torch.isfinite(out).all()
    assert forwards(rig.unet) == [None] * 7  # the attention hooks are gone; the other extension's forward stays
    assert "forward" in vars(rig.unet)
    rig.unet.forward = type(rig.unet).forward.__get__(rig.unet)  # put back on the instance, as ControlNet restores
    assert foreign_forward(rig.unet) is None


def test_step_tracker_patterns():
    t = StepTracker("plms")
    assert [t.on_eval() for _ in range(5)] == [0, None, 1, 2, 3]
    t = StepTracker("callback")
    seq = []
    for _ in range(3):
        seq += [t.on_eval(), t.on_eval()]
        t.on_callback()
    assert seq == [0, None, 1, None, 2, None]
    assert evaluation_pattern("Heun") == "second_order"
    assert evaluation_pattern("DPM++ 2M") == "first_order"
    assert evaluation_pattern("Euler a", second_order=False) == "first_order"
    assert evaluation_pattern("PLMS") == "plms"
    assert evaluation_pattern("DPM adaptive") == "callback"
    assert evaluation_pattern("DPM fast") == "dpm_fast"
    t = StepTracker("dpm_fast")
    assert t.set_evaluations(5) == 2  # orders 3, 2
    assert [t.on_eval() for _ in range(5)] == [0, None, None, 1, None]
    t = StepTracker("dpm_fast")
    assert t.set_evaluations(6) == 3  # orders 3, 2, 1
    assert [t.on_eval() for _ in range(6)] == [0, None, None, 1, None, 2]
    assert evaluation_pattern("Restart") == evaluation_pattern("Restart", second_order=True) == "second_order"
    with pytest.raises(ValueError):
        StepTracker("fourth_order")


def test_snapshots_and_grid(rig):
    assert snapshot_steps(20, 0) == (0, 6, 13, 19)
    assert snapshot_steps(20, 3) == (0, 1, 2)
    session = rig.session(PROMPTS, show_maps=True, maps_view="grid")
    rig.sample(PROMPTS, steps=5, session=session)
    snaps = session.passes[0].snapshots
    assert sorted(snaps) == list(snapshot_steps(5, 0))
    snap = snaps[0]
    assert snap.before[0].shape == snap.after[0].shape == (2, 8, 8)
    assert not torch.equal(snap.before[0], snap.after[0])
    grids = session_grids(session)
    assert len(grids) == 1
    w, h = grids[0].size
    assert w > 8 * 128 and h > 2 * 128


def test_summary_reports_per_image_losses_of_first_and_last_step(rig):
    prompts = ["a cat and a dog", "a dog beside a cat"]
    session = rig.session(prompts)
    rig.sample(prompts, steps=4, session=session)
    results = session.passes[0].results
    first_seg = results[0].parts["seg"] / 2
    last_seg, last_ret = results[-1].parts["seg"] / 2, results[-1].parts["ret"] / 2
    assert "ret" not in results[0].parts  # no retention mask at the first step
    assert 0.0 < first_seg <= 0.5 and 0.0 < last_ret <= 2.0  # per image: one pair, two concepts
    assert session.summary() == f"first pass: 4/4 steps, L_seg {first_seg:.3f}->{last_seg:.3f}, L_ret {last_ret:.3f}"


def test_a_model_switched_mid_sampling_is_reported(rig):
    """The WebUI's refiner option swaps the UNet mid-sampling: the new one carries none of our hooks."""
    session = rig.session(PROMPTS)
    other = tiny_unet("sd1", seed=1)

    def switched(x_model, sigma, rows):
        return other(x_model, sigma, context=rig.encoder(list(PROMPTS)))

    session.begin_pass(PassInfo((32, 32), 4))
    x = torch.randn(1, 4, 32, 32)
    with torch.no_grad():
        assert session.before_model_call(x, torch.tensor([5.0]), switched) is None
    session.close()
    assert "model was switched during sampling" in session.disabled_reason
    assert forwards(rig.unet) == [None] * 7
