import math

import pytest
import torch

from segret_lib.engine.attention_maps import concept_maps
from segret_lib.engine.losses import (
    binarize,
    excite_loss,
    loss_terms,
    otsu_threshold,
    retention_loss,
    segregation_loss,
)
from segret_lib.engine.tokens import ConceptTokens
from segret_lib.settings.params import ParamError, SegretParams


def method_loss(method, maps, prev_masks, seg_weight=1.0, ret_weight=1.0):
    """loss_terms with the terms read as floats."""
    loss, terms = loss_terms(method, maps, prev_masks, seg_weight, ret_weight)
    return loss, {k: float(v) for k, v in terms.items()}


def total_loss(maps, prev_masks, seg_weight=1.0, ret_weight=1.0):
    """Eq. 4: w_seg * L_seg + w_ret * L_ret (the A-STAR method)."""
    return method_loss("astar", maps, prev_masks, seg_weight, ret_weight)


def blob(h, w, y0, y1, x0, x1, value=1.0):
    m = torch.zeros(h, w)
    m[y0:y1, x0:x1] = value
    return m


def test_segregation_identical_maps_is_half_and_disjoint_is_zero():
    a = torch.rand(8, 8)
    assert segregation_loss(torch.stack([a, a])).item() == pytest.approx(0.5, abs=1e-6)
    left, right = blob(8, 8, 0, 8, 0, 4), blob(8, 8, 0, 8, 4, 8)
    assert segregation_loss(torch.stack([left, right])).item() == pytest.approx(0.0, abs=1e-7)


def test_segregation_partial_overlap_matches_hand_value_and_sums_pairs():
    a = blob(4, 4, 0, 4, 0, 2)  # 8 pixels
    b = blob(4, 4, 0, 4, 1, 3)  # 8 pixels, 4 shared with a
    c = blob(4, 4, 0, 4, 3, 4)  # 4 pixels, none shared with a, none with b
    # a-b: 4 / 16; a-c: 0; b-c: 0
    assert segregation_loss(torch.stack([a, b])).item() == pytest.approx(0.25)
    assert segregation_loss(torch.stack([a, b, c])).item() == pytest.approx(0.25)
    # three identical maps: 3 pairs * 0.5
    assert segregation_loss(torch.stack([a, a, a])).item() == pytest.approx(1.5)


def test_segregation_single_concept_is_zero():
    assert segregation_loss(torch.rand(1, 4, 4)).item() == 0.0


def test_retention_values():
    mask = blob(4, 4, 0, 2, 0, 4)  # 8 pixels
    # A == B: min sum 8, sum 16 -> 1 - 0.5
    assert retention_loss(mask[None], mask[None]).item() == pytest.approx(0.5)
    # A disjoint from B -> 1
    assert retention_loss(blob(4, 4, 2, 4, 0, 4)[None], mask[None]).item() == pytest.approx(1.0)
    # half of A's mass inside B: min sum = 0.5*8 = 4 ; sum = 0.5*16 + 8 = 16
    half = torch.full((4, 4), 0.5)
    assert retention_loss(half[None], mask[None]).item() == pytest.approx(1 - 4 / 16)
    # summed over concepts
    two = retention_loss(torch.stack([mask, half]), torch.stack([mask, mask]))
    assert two.item() == pytest.approx(0.5 + 0.75)


def test_retention_mask_gets_no_gradient():
    a = torch.rand(2, 4, 4, requires_grad=True)
    b = torch.rand(2, 4, 4, requires_grad=True)
    retention_loss(a, b).backward()
    assert a.grad is not None and b.grad is None


def test_binarize_fraction_and_otsu():
    m = torch.tensor([[0.0, 0.1, 0.2, 0.9], [1.0, 0.45, 0.55, 0.05]])
    frac = binarize(m[None], "fraction", 0.5)[0]
    assert frac.tolist() == [[0, 0, 0, 1], [1, 0, 1, 0]]
    # bimodal values: Otsu splits between the modes
    vals = torch.cat([torch.full((50,), 0.1), torch.full((50,), 0.8)]).reshape(10, 10)
    level = otsu_threshold(vals)
    assert 0.1 < level <= 0.8
    assert binarize(vals[None], "otsu")[0].sum().item() == 50


def test_total_loss_weights_and_first_step():
    a = torch.rand(2, 4, 4)
    masks = binarize(a, "fraction", 0.5)
    only_seg, parts = total_loss(a, None, 2.0, 1.0)
    assert set(parts) == {"seg"}
    assert only_seg.item() == pytest.approx(2.0 * segregation_loss(a).item())
    both, parts = total_loss(a, masks, 1.0, 3.0)
    assert both.item() == pytest.approx(segregation_loss(a).item() + 3.0 * retention_loss(a, masks).item())
    zero, parts = total_loss(a, masks, 0.0, 0.0)
    assert parts == {} and zero.item() == 0.0


# ------------------------------------------------------------------------------------------------- Attend-and-Excite
def test_excite_loss_is_the_most_neglected_concepts_shortfall():
    a = blob(4, 4, 0, 2, 0, 2, value=0.9)  # peaks at 0.9
    b = blob(4, 4, 1, 3, 1, 3, value=0.3)  # peaks at 0.3: the most neglected
    assert excite_loss(torch.stack([a, b])).item() == pytest.approx(0.7)
    assert excite_loss(torch.stack([b, a])).item() == pytest.approx(0.7)  # order does not matter
    assert excite_loss(a[None]).item() == pytest.approx(0.1)
    assert excite_loss(torch.ones(2, 4, 4)).item() == 0.0
    assert excite_loss(torch.zeros(0, 4, 4)).item() == 0.0


def test_excite_loss_gradient_reaches_only_the_neglected_concepts_peak():
    maps = torch.stack([blob(4, 4, 0, 1, 0, 1, value=0.9), blob(4, 4, 2, 3, 3, 4, value=0.3)]).requires_grad_(True)
    excite_loss(maps).backward()
    expected = torch.zeros(2, 4, 4)
    expected[1, 2, 3] = -1.0  # d(1 - max A^1)/dA^1 at its argmax
    assert torch.equal(maps.grad, expected)


def test_excite_loss_through_the_attention_preprocessing():
    """Hand-made attention: the start token is dropped, the 2 real tokens x100 soft-maxed, maps smoothed 3x3
    sigma 0.5 (reflect); A&E's loss is 1 - the lower of the two smoothed maxima."""
    h = w = 4
    probs = torch.zeros(h * w, 77)
    probs[:, 0] = 0.9  # start token: dropped
    probs[:, 1:3] = 0.05  # both tokens equal: 0.5 / 0.5 after the softmax
    probs[:, 3:] = 0.001  # end and padding: dropped
    probs[1 * w + 1, 1:3] = torch.tensor([0.06, 0.04])  # 'cat' wins pixel (1, 1): softmax(6, 4)
    maps = concept_maps(probs, (h, w), 2, [ConceptTokens("cat", (1,)), ConceptTokens("dog", (2,))])
    hot = 1 / (1 + math.exp(-2.0))  # softmax([6, 4])[0]
    g = [math.exp(-(dx * dx + dy * dy) / (2 * 0.5**2)) for dx in (-1, 0, 1) for dy in (-1, 0, 1)]
    centre = 1.0 / sum(g)
    cat_peak = centre * hot + (1 - centre) * 0.5
    dog_peak = 0.5  # far from (1, 1), e.g. at (3, 3), the dog map is 0.5 everywhere around
    assert maps[0].max().item() == pytest.approx(cat_peak, rel=1e-5)
    assert maps[1].max().item() == pytest.approx(dog_peak, rel=1e-5)
    assert excite_loss(maps).item() == pytest.approx(1 - min(cat_peak, dog_peak), rel=1e-5)
    probs[1 * w + 1, 1:3] = torch.tensor([0.04, 0.06])  # now 'dog' wins the pixel: 'cat' is the neglected one
    maps = concept_maps(probs, (h, w), 2, [ConceptTokens("cat", (1,)), ConceptTokens("dog", (2,))])
    assert excite_loss(maps).item() == pytest.approx(1 - 0.5, rel=1e-5)
    assert maps[1].max().item() == pytest.approx(cat_peak, rel=1e-5)


def test_method_loss_combines_the_terms():
    a = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0))
    masks = binarize(a, "fraction", 0.5)
    astar, parts = method_loss("astar", a, masks, 1.0, 2.0)
    assert set(parts) == {"seg", "ret"} and astar.item() == pytest.approx(total_loss(a, masks, 1.0, 2.0)[0].item())
    aae, parts = method_loss("aae", a, masks, 1.0, 2.0)
    assert set(parts) == {"aae"} and aae.item() == pytest.approx(excite_loss(a).item())
    both, parts = method_loss("both", a, masks, 1.0, 2.0)
    assert set(parts) == {"seg", "ret", "aae"}
    assert both.item() == pytest.approx(astar.item() + aae.item())
    quarter, parts = loss_terms("both", a, masks, 1.0, 2.0, excite_weight=0.25)
    assert quarter.item() == pytest.approx(astar.item() + 0.25 * aae.item())
    assert float(parts["aae"]) == pytest.approx(aae.item())  # the term is reported unweighted
    alone, _ = loss_terms("astar", a, masks, 1.0, 2.0, excite_weight=0.25)  # A-STAR has no excite term
    assert alone.item() == pytest.approx(astar.item())


def test_excite_weight_setting_infotext_and_old_infotexts():
    """Both's default is 0.25 and is always written; an infotext without the key was made with 1 (every version
    before), for Both as for the other methods, which write it only when it is not 1."""
    p = SegretParams.create(enabled=True, concepts="cat, dog", method="both")
    assert p.excite_weight == 0.25
    info = p.to_infotext()
    assert info["A-STAR excite weight"] == "0.25" and info["A-STAR method"] == "Both"
    assert SegretParams.from_infotext(info).excite_weight == 0.25
    one = p.replace(excite_weight=1.0).to_infotext()
    assert one["A-STAR excite weight"] == "1" and SegretParams.from_infotext(one).excite_weight == 1.0
    old = {k: v for k, v in one.items() if k != "A-STAR excite weight"}  # a Both infotext from before
    assert SegretParams.from_infotext(old).excite_weight == 1.0
    astar = SegretParams.create(enabled=True, concepts="cat, dog")
    assert astar.excite_weight == 1.0 and "A-STAR excite weight" not in astar.to_infotext()
    assert SegretParams.create(enabled=True, concepts="cat, dog", method="aae").excite_weight == 1.0
    with pytest.raises(ParamError, match="excite_weight"):
        SegretParams.create(excite_weight=-0.5)

