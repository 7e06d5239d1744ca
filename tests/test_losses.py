import pytest
import torch

from segret_lib.losses import binarize, otsu_threshold, retention_loss, segregation_loss, total_loss


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
