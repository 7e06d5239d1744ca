"""The refinement's host cost, counted (not timed) with segret_lib.testing.profiling: synchronisations and dispatched
ops per refined step; and the vectorised losses and maps against straightforward per-concept loops."""

import pytest
import torch

from segret_lib.engine.attention_maps import concept_maps, smooth
from segret_lib.engine.losses import binarize, segregation_loss
from segret_lib.engine.tokens import ConceptTokens
from segret_lib.testing.profiling import count_ops, per_refined_step
from tests.helpers import make_rig

PROMPT = "a photo of a cat and a dog with a bird and a horse"
CONCEPTS = ("cat", "dog", "bird", "horse")


@pytest.fixture(scope="module")
def rig():
    return make_rig()


# ---------------------------------------------------------------- references: one concept / one pair at a time
def reference_segregation(maps: torch.Tensor) -> torch.Tensor:
    total = maps.new_zeros(())
    for m in range(maps.shape[0]):
        for n in range(m):
            overlap = torch.minimum(maps[m], maps[n]).sum()
            total = total + overlap / (maps[m].sum() + maps[n].sum() + 1e-8)
    return total


def reference_binarize(maps: torch.Tensor, threshold: float) -> torch.Tensor:
    return torch.stack([(a >= threshold * float(a.max())).float() for a in maps])


def reference_concept_maps(probs, hw, n_keys, concepts, combine):
    text = (probs[:, 1:1 + n_keys].float() * 100.0).softmax(dim=-1)
    out = []
    for c in concepts:
        token_maps = text[:, [p - 1 for p in c.positions]]
        m = {"max": lambda t: t.max(dim=1).values, "sum": lambda t: t.sum(dim=1)}.get(
            combine, lambda t: t.mean(dim=1))(token_maps)
        out.append(m.reshape(hw))
    return smooth(torch.stack(out))


@pytest.mark.parametrize("c", [1, 2, 3, 4, 6])
def test_vectorised_segregation_equals_the_pair_loop_with_its_gradient(c):
    g = torch.Generator().manual_seed(c)
    maps = torch.rand(c, 16, 16, generator=g).requires_grad_(True)
    ours, ref = segregation_loss(maps), reference_segregation(maps)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6, abs=1e-7)
    if c > 1:
        (g1,) = torch.autograd.grad(ours, maps)
        (g2,) = torch.autograd.grad(ref, maps)
        torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.8])
def test_vectorised_binarize_equals_the_concept_loop(threshold):
    maps = torch.rand(5, 16, 16, generator=torch.Generator().manual_seed(3))
    assert torch.equal(binarize(maps, "fraction", threshold), reference_binarize(maps, threshold))


@pytest.mark.parametrize("combine", ["mean", "sum", "max"])
def test_vectorised_concept_maps_equal_the_concept_loop(combine):
    g = torch.Generator().manual_seed(4)
    probs = torch.rand(64, 77, generator=g).softmax(-1).requires_grad_(True)
    concepts = [ConceptTokens("a", (2,)), ConceptTokens("bc", (4, 5)), ConceptTokens("d", (7,)),
                ConceptTokens("efg", (8, 9, 10))]
    ours = concept_maps(probs, (8, 8), 12, concepts, combine=combine)
    ref = reference_concept_maps(probs, (8, 8), 12, concepts, combine)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)
    (g1,) = torch.autograd.grad(ours.square().sum(), probs)
    (g2,) = torch.autograd.grad(ref.square().sum(), probs)
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-7)


def test_counter_sees_reads_and_host_copies():
    t = torch.rand(3)
    with count_ops() as count:
        float(t.sum())
        bool(torch.isfinite(t).all())
        t.tolist()
        torch.tensor([1, 2], device=t.device)
        t.nonzero()
    assert count.syncs == 5 and count.ops >= 5


def refined_step_counts(rig, n_concepts: int, steps: int = 4, **params) -> list:
    session = rig.session([PROMPT], concepts=CONCEPTS[:n_concepts], **params)
    with per_refined_step(session) as counts:
        rig.sample([PROMPT], steps=steps, session=session)
    assert len(counts) == steps and all(r.updates == 1 for r in session.passes[0].results)
    assert "before_model_call" not in session.__dict__  # the counter's wrapper is gone
    return counts


@pytest.mark.parametrize("params", [{}, {"method": "aae", "iterative": False, "last_step": 100}, {"low_vram": True}])
def test_at_most_two_syncs_per_refined_step_and_ops_independent_of_the_concept_count(rig, params):
    ops = {}
    for n in (2, 3, 4):
        counts = refined_step_counts(rig, n, **params)
        assert max(c.syncs for c in counts) <= 2, [dict(c.syncs_by) for c in counts]
        ops[n] = [c.ops for c in counts[1:]]  # the first step has no retention mask and learns the layer count
    assert ops[2] == ops[3] == ops[4], ops
