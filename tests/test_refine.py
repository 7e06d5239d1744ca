import itertools
import math

import pytest
import torch

from segret_lib.engine.losses import excite_loss, segregation_loss
from segret_lib.engine.refine import Refiner
from segret_lib.engine.schedule import (
    is_refined_step,
    iterative_schedule,
    last_refined_step,
    latent_scale,
    scale_step,
    sigma_from_timestep,
    step_size,
)
from segret_lib.engine.session import PassInfo
from segret_lib.settings.params import SegretParams
from tests.helpers import make_rig

PROMPT = "a cat and a dog"


@pytest.fixture(scope="module")
def rig():
    return make_rig()


def forward_maps_for(rig, session, sigma):
    session.begin_pass(PassInfo((32, 32), 50))
    cond = rig.encoder([PROMPT])

    def run(xm, s, rows):
        return rig.denoiser(xm, s, cond={"c_crossattn": [cond[list(rows)]]})

    return lambda xm: session._forward_maps(xm, sigma.reshape(1), [0], torch.tensor([0]), run)


def test_step_size_schedule():
    assert step_size(20, 0, 50) == pytest.approx(20.0)
    assert step_size(20, 49, 50) == pytest.approx(20 * 0.5**0.5)
    assert step_size(20, 24, 49) == pytest.approx(20 * 0.75**0.5)
    assert step_size(20, 0, 1) == 20


def test_gradient_steps_lower_segregation_loss(rig):
    session = rig.session([PROMPT], ret_weight=0.0, step_size=200.0)
    sigma = rig.denoiser.get_sigmas(50)[10]
    forward_maps = forward_maps_for(rig, session, sigma)
    x = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0)) * sigma
    s = latent_scale(sigma.reshape(1), "sigma").reshape(1, 1, 1, 1)
    losses = []
    for _ in range(5):
        x, result = session.refiner.refine(x, s, 10, 50, forward_maps)
        losses.append(result.loss)
    with torch.no_grad():
        losses.append(float(segregation_loss(forward_maps(x)[0])))
    session.close()
    assert all(b < a for a, b in itertools.pairwise(losses)), losses


@pytest.mark.parametrize("parameterization", ["sigma", "timestep"])
def test_update_is_alpha_times_scale_times_grad_z(rig, parameterization):
    session = rig.session([PROMPT], step_rule="v1")
    sigma = rig.denoiser.get_sigmas(30)[5]
    forward_maps = forward_maps_for(rig, session, sigma)
    value = sigma if parameterization == "sigma" else torch.tensor(600.0)
    s = latent_scale(value.reshape(1), parameterization).reshape(1, 1, 1, 1)
    if parameterization == "sigma":
        assert s.item() == pytest.approx((1 + sigma.item() ** 2) ** 0.5)
    else:
        assert s.item() == 1.0
    x = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(1)) * s
    # independent computation of grad_z L on z = x / s
    z = (x / s).requires_grad_(True)
    with torch.enable_grad():
        loss = segregation_loss(forward_maps(z * s)[0])
        (grad_z,) = torch.autograd.grad(loss, z)
    new_x, result = session.refiner.refine(x, s, 3, 30, forward_maps)
    session.close()
    alpha = step_size(session.refiner.params.step_size, 3, 30)
    assert alpha > 0
    expected = -alpha * s * grad_z
    assert expected.abs().max() > 0
    # float32 rounding of x + delta limits the comparison to ~1e-7 * |x|
    torch.testing.assert_close(new_x - x, expected, rtol=1e-3, atol=2e-6 * float(x.abs().max()))
    assert result.updates == 1 and result.loss == pytest.approx(loss.item(), rel=1e-5)


def test_sigma_from_timestep_matches_k_diffusion(rig):
    ac = rig.ldm.alphas_cumprod
    for t in (0, 250, 999):
        expected = ((1 - ac[t]) / ac[t]) ** 0.5
        assert sigma_from_timestep(torch.tensor(float(t)), ac).item() == pytest.approx(expected.item(), rel=1e-5)
        # the k-diffusion wrapper agrees in the other direction
        assert rig.denoiser.sigma_to_t(expected).item() == pytest.approx(t, abs=1e-2)


def test_retention_uses_previous_step_mask(rig):
    session = rig.session([PROMPT], seg_weight=0.0)
    sigma = rig.denoiser.get_sigmas(30)[5]
    forward_maps = forward_maps_for(rig, session, sigma)
    s = latent_scale(sigma.reshape(1), "sigma").reshape(1, 1, 1, 1)
    x = torch.randn(1, 4, 32, 32) * sigma
    x1, first = session.refiner.refine(x, s, 0, 30, forward_maps)
    assert first.updates == 0 and first.parts == {}  # no mask at the first step and no segregation term
    assert session.refiner.prev_masks[0] is not None and session.refiner.prev_masks[0].shape == (2, 8, 8)
    _, second = session.refiner.refine(x1, s, 1, 30, forward_maps)
    session.close()
    assert second.updates == 1 and set(second.parts) == {"ret"}


def test_iterative_refinement_is_capped_and_stops_at_target(rig):
    session = rig.session([PROMPT], iterative=True, iterative_steps=(0,), iterative_max=4, iterative_target=0.0)
    sigma = rig.denoiser.get_sigmas(30)[5]
    forward_maps = forward_maps_for(rig, session, sigma)
    s = latent_scale(sigma.reshape(1), "sigma").reshape(1, 1, 1, 1)
    x = torch.randn(1, 4, 32, 32) * sigma
    _, res = session.refiner.refine(x, s, 0, 30, forward_maps)
    assert res.updates == 4 and res.final_loss < res.loss
    _, res = session.refiner.refine(x, s, 1, 30, forward_maps)  # step 1 is not an iterative step
    assert res.updates == 1
    reached = Refiner(SegretParams(enabled=True, concepts=("a", "b"), iterative=True, iterative_steps=(0,),
                                   iterative_target=10.0), 1)
    _, res = reached.refine(x, s, 0, 30, forward_maps)
    session.close()
    assert res.updates == 1  # target already met after the first update


def test_non_finite_maps_skip_the_update():
    refiner = Refiner(SegretParams(enabled=True, concepts=("a", "b")), 1)
    x = torch.randn(1, 4, 8, 8)
    weight = torch.ones(1, requires_grad=True)

    def nan_maps(xm):
        return [torch.stack([xm[0, 0] * weight * float("nan"), xm[0, 1].abs()])]

    new_x, res = refiner.refine(x, torch.ones(1, 1, 1, 1), 0, 10, nan_maps)
    assert torch.equal(new_x, x) and res.updates == 0 and "non-finite" in res.skipped
    assert refiner.prev_masks[0] is None


def test_layout_masks_replace_the_previous_step_mask(rig):
    """Paper section 5: a user-given mask B^m per concept instead of the previous step's map."""
    session = rig.session([PROMPT], seg_weight=0.0)
    sigma = rig.denoiser.get_sigmas(30)[5]
    forward_maps = forward_maps_for(rig, session, sigma)
    s = latent_scale(sigma.reshape(1), "sigma").reshape(1, 1, 1, 1)
    layout = torch.zeros(2, 8, 8)
    layout[0, :, :4] = 1.0  # cat on the left
    layout[1, :, 4:] = 1.0  # dog on the right
    refiner = Refiner(session.params, 1, layout_masks=[layout])
    x = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(2)) * sigma
    losses = []
    for step in range(4):
        x, res = refiner.refine(x, s, step, 30, forward_maps)
        losses.append(res.loss)
    session.close()
    assert res.updates == 1 and set(res.parts) == {"ret"}  # retention from the first step: the mask is given
    assert all(b < a for a, b in itertools.pairwise(losses)), losses


# ------------------------------------------------------------------------------------------------- Attend-and-Excite
def test_aae_step_indices_scale_from_50_steps():
    assert [scale_step(i, 50) for i in (0, 10, 20, 25)] == [0, 10, 20, 25]
    assert [scale_step(i, 25) for i in (0, 10, 20, 25)] == [0, 5, 10, 13]  # 12.5 -> 13: halves round up
    assert [scale_step(i, 20) for i in (0, 10, 20, 25)] == [0, 4, 8, 10]
    assert [scale_step(i, 30) for i in (0, 10, 20, 25)] == [0, 6, 12, 15]


def test_aae_updates_the_first_half_of_the_steps():
    aae = SegretParams.create(enabled=True, concepts="a, b", method="aae")
    assert [last_refined_step(aae, t) for t in (50, 30, 25, 20, 1)] == [25, 15, 13, 10, 1]
    assert last_refined_step(aae.replace(last_step=40), 50) == 40  # an explicit value is taken as it is
    astar = SegretParams.create(enabled=True, concepts="a, b")  # the rule "early": the first half too
    assert [last_refined_step(astar, t) for t in (50, 25, 10, 4, 1)] == [25, 13, 5, 2, 1]
    assert last_refined_step(astar.replace(method="both"), 25) == 13
    assert last_refined_step(astar.replace(last_step=40), 50) == 40  # an explicit value wins over the rule
    for rule in ("steady", "balanced", "v1"):  # these refine every step (0 = no last step)
        assert last_refined_step(astar.replace(step_rule=rule), 50) == 0
    assert [s for s in range(50) if is_refined_step(s, last_refined_step(aae, 50))] == list(range(25))


def test_aae_iterative_thresholds():
    aae = SegretParams.create(enabled=True, concepts="a, b", method="Attend-and-Excite")
    assert aae.iterative and aae.iterative_steps == () and aae.iterative_max == 20
    assert iterative_schedule(aae, 50) == {0: 0.95, 10: 0.5, 20: 0.2}  # concept maxima 0.05, 0.5, 0.8
    assert iterative_schedule(aae, 20) == {0: 0.95, 4: 0.5, 8: 0.2}
    assert iterative_schedule(aae, 2) == {0: 0.95, 1: 0.2}  # steps 0 and 10 both land on 0: the first is kept
    assert iterative_schedule(aae.replace(iterative=False), 50) == {}
    assert iterative_schedule(aae.replace(iterative_steps=(3, 7)), 50) == {3: 0.95, 7: 0.5}  # explicit: absolute
    astar = SegretParams.create(enabled=True, concepts="a, b", iterative=True)
    assert iterative_schedule(astar, 20) == {0: 0.2, 10: 0.2, 20: 0.2}  # A-STAR's: as before, not scaled


def peak_maps(offsets):
    """forward_maps for fake 'attention': image i's concept c map is sigmoid(offsets[i][c] + z[i, c, 0, 0])
    everywhere, so its maximum rises with that latent value and A&E's loss is 1 - the lower sigmoid."""
    weight = torch.ones(1, requires_grad=True)

    def forward(xm):
        out = []
        for i, off in enumerate(offsets):
            peaks = torch.sigmoid(torch.tensor(off) + xm[i, :2, 0, 0] * weight)
            out.append(peaks[:, None, None].expand(2, 4, 4))
        return out

    return forward


def test_aae_iterative_step_repeats_until_every_concept_reaches_the_threshold():
    params = SegretParams.create(enabled=True, concepts="a, b", method="aae", step_size=200.0)
    scale = torch.ones(1, 1, 1, 1)
    x = torch.zeros(1, 4, 8, 8)
    # step 0 of 50, threshold 0.05: concept b peaks at sigmoid(-6) = 0.0025
    new_x, res = Refiner(params, 1).refine(x, scale, 0, 50, peak_maps([(3.0, -6.0)]))
    assert res.loss == pytest.approx(1 - 1 / (1 + math.exp(6)))
    assert 1 < res.updates < 20 and res.final_loss <= 0.95
    # it stopped at the first update that reached the target: one update fewer is still above it
    _, fewer = Refiner(params.replace(iterative_steps=(0,), iterative_max=res.updates - 1), 1).refine(
        x, scale, 0, 50, peak_maps([(3.0, -6.0)]))
    assert fewer.updates == res.updates - 1
    with torch.no_grad():
        assert excite_loss(peak_maps([(3.0, -6.0)])(new_x)[0]).item() <= 0.95
    # only concept b's latent moved (the gradient of the max over concepts)
    assert new_x[0, 1, 0, 0] > 0 and new_x[0, 0, 0, 0] == 0
    # step 20, threshold 0.8, a small step: capped at 20 updates
    _, capped = Refiner(params.replace(step_size=0.001), 1).refine(x, scale, 20, 50, peak_maps([(3.0, -6.0)]))
    assert capped.updates == 20 and capped.final_loss > 0.2
    # a step that is not iterative: one update
    _, single = Refiner(params, 1).refine(x, scale, 5, 50, peak_maps([(3.0, -6.0)]))
    assert single.updates == 1


def test_iterative_images_stop_on_their_own():
    """An image already at the target gets the step's one update only, whatever the others in its batch need."""
    params = SegretParams.create(enabled=True, concepts="a, b", method="aae", step_size=200.0)
    scale = torch.ones(1, 1, 1, 1)
    x = torch.zeros(2, 4, 8, 8)
    together, res = Refiner(params, 2).refine(x, scale, 0, 50, peak_maps([(3.0, 3.0), (3.0, -6.0)]))
    alone_done, one = Refiner(params, 1).refine(x[:1], scale, 0, 50, peak_maps([(3.0, 3.0)]))
    alone_needy, many = Refiner(params, 1).refine(x[1:], scale, 0, 50, peak_maps([(3.0, -6.0)]))
    assert one.updates == 1 and many.updates > 1 and res.updates == many.updates
    torch.testing.assert_close(together[:1], alone_done)
    torch.testing.assert_close(together[1:], alone_needy)


def test_aae_refines_the_first_half_through_the_sampler(rig):
    session = rig.session([PROMPT], method="aae", iterative=False)
    rig.sample([PROMPT], steps=6, session=session)
    results = session.passes[0].results
    assert [r.step for r in results] == [0, 1, 2] and all(r.updates == 1 for r in results)
    assert all(set(r.parts) == {"aae"} for r in results)
    assert session.summary().startswith("first pass: 3/6 steps, L_A&E ")
    assert session.refiner.prev_masks == [None]  # no retention masks are kept for A&E


def test_aae_update_is_alpha_times_scale_times_grad_z(rig):
    session = rig.session([PROMPT], method="aae", iterative=False, step_rule="v1")
    sigma = rig.denoiser.get_sigmas(30)[5]
    forward_maps = forward_maps_for(rig, session, sigma)
    s = latent_scale(sigma.reshape(1), "sigma").reshape(1, 1, 1, 1)
    x = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(1)) * s
    z = (x / s).requires_grad_(True)
    with torch.enable_grad():
        loss = excite_loss(forward_maps(z * s)[0])
        (grad_z,) = torch.autograd.grad(loss, z)
    new_x, result = session.refiner.refine(x, s, 3, 30, forward_maps)
    session.close()
    expected = -step_size(session.refiner.params.step_size, 3, 30) * s * grad_z
    assert expected.abs().max() > 0
    torch.testing.assert_close(new_x - x, expected, rtol=1e-3, atol=2e-6 * float(x.abs().max()))
    assert result.updates == 1 and result.loss == pytest.approx(loss.item(), rel=1e-5)


def test_balanced_update_is_budgeted_lowpassed_gradient_of_the_mean_losses(rig):
    """Step rule "balanced": the update is -alpha_t * sqrt(min(1, budget / T)) * s * lowpass(grad_z L), L_seg a mean
    over the concept pairs; at T <= budget it is the full alpha_t."""
    from segret_lib.engine.step_rule import budget_factor, get_rule, lowpass

    concepts = ("cat", "dog", "sofa")
    prompt = "a cat and a dog on a sofa"
    session = rig.session([prompt], concepts=concepts, ret_weight=0.0, step_rule="balanced")
    session.begin_pass(PassInfo((32, 32), 50))
    cond = rig.encoder([prompt])
    sigma = rig.denoiser.get_sigmas(30)[5]

    def run(xm, s, rows):
        return rig.denoiser(xm, s, cond={"c_crossattn": [cond[list(rows)]]})

    def forward_maps(xm):
        return session._forward_maps(xm, sigma.reshape(1), [0], torch.tensor([0]), run)

    s = latent_scale(sigma.reshape(1), "sigma").reshape(1, 1, 1, 1)
    x = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(2)) * s
    z = (x / s).requires_grad_(True)
    with torch.enable_grad():
        maps = forward_maps(z * s)[0]
        loss = segregation_loss(maps) / 3  # three pairs
        (grad_z,) = torch.autograd.grad(loss, z)
    rule = get_rule("balanced")
    smooth = lowpass(grad_z, tuple(maps.shape[-2:]), rule.blur)
    assert (smooth - grad_z).abs().max() > 1e-3 * grad_z.abs().max()  # the low-pass changed the gradient
    for total in (rule.budget, 4 * rule.budget):
        new_x, result = session.refiner.refine(x, s, 3, total, forward_maps)
        expected = -step_size(session.refiner.params.step_size, 3, total) * budget_factor(rule, total) * s * smooth
        assert expected.abs().max() > 0
        torch.testing.assert_close(new_x - x, expected, rtol=1e-3, atol=2e-6 * float(x.abs().max()))
        assert result.updates == 1 and result.parts["seg"] == pytest.approx(3 * loss.item(), rel=1e-5)
    session.close()


def test_steady_update_is_the_balanced_one_at_the_latents_rms(rig):
    """Step rule "steady" (A-STAR's default): balanced's update, then each image's latent rescaled to its RMS
    before the update: the same direction as balanced's result, the norm of the latent it started from."""
    concepts = ("cat", "dog", "sofa")
    prompt = "a cat and a dog on a sofa"
    cond = rig.encoder([prompt])
    sigma = rig.denoiser.get_sigmas(30)[5]
    s = latent_scale(sigma.reshape(1), "sigma").reshape(1, 1, 1, 1)
    x = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(2)) * s
    moved = {}
    for rule in ("balanced", "steady"):
        session = rig.session([prompt], concepts=concepts, ret_weight=0.0, step_rule=rule, step_size=1000.0)
        session.begin_pass(PassInfo((32, 32), 10))

        def forward_maps(xm, session=session):
            return session._forward_maps(xm, sigma.reshape(1), [0],  torch.tensor([0]),
                                         lambda xm, sg, rows: rig.denoiser(xm, sg, cond={"c_crossattn": [cond]}))

        moved[rule], result = session.refiner.refine(x, s, 3, 10, forward_maps)
        assert result.updates == 1
        session.close()
    rms = lambda t: t.pow(2).mean().sqrt()  # noqa: E731
    assert abs(rms(moved["balanced"]) / rms(x) - 1) > 1e-5  # balanced's update changed the latent's norm
    torch.testing.assert_close(rms(moved["steady"]), rms(x), rtol=1e-6, atol=0)
    torch.testing.assert_close(moved["steady"], moved["balanced"] * (rms(x) / rms(moved["balanced"])))
