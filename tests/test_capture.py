import pytest
import torch
from ldm.modules.attention import CrossAttention

from segret_lib.engine.attention_maps import capture_hw, concept_maps, smooth
from segret_lib.engine.capture import AttentionCapture, CaptureComplete, cross_attention_modules, explicit_attention
from segret_lib.engine.tokens import ConceptTokens
from segret_lib.testing.tiny_models import sdp_attention_forward, tiny_unet


def forwards(modules):
    return [(m.__dict__.get("forward"), type(m).forward) for m in modules]


@pytest.mark.parametrize("kind", ["sd1", "sd2"])
def test_explicit_attention_matches_module_forward(kind):
    unet = tiny_unet(kind)
    torch.manual_seed(3)
    for module in cross_attention_modules(unet):
        x = torch.randn(2, 64, module.to_q.in_features)
        ctx = torch.randn(2, 154, module.to_k.in_features)  # two 77-token chunks
        out, probs = explicit_attention(module, x, ctx)
        torch.testing.assert_close(out, module(x, ctx), rtol=1e-5, atol=1e-5)
        assert probs.shape == (2, module.heads, 64, 154)
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, module.heads, 64))


@pytest.mark.parametrize("kind", ["sd1", "sd2"])
def test_unet_output_identical_while_capturing(kind, text_encoder):
    unet = tiny_unet(kind)
    modules = cross_attention_modules(unet)
    x, t = torch.randn(2, 4, 32, 32), torch.tensor([700, 700])
    ctx = text_encoder(["a cat and a dog", "a red car"])
    with torch.no_grad():
        ref = unet(x, t, context=ctx)
        cap = AttentionCapture()
        with cap.installed_on(modules):
            h, w = capture_hw(32, 32)
            with cap.capturing(h * w) as probs:
                out = unet(x, t, context=ctx)
            idle = unet(x, t, context=ctx)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(idle, ref)  # not capturing: the previous forward runs untouched
    # input level 2, middle block, two output blocks of level 2 are at 8x8
    assert len(probs) == 4 and all(p.shape == (2, 64, 77) for p in probs)


def test_capture_resolution_formula():
    assert capture_hw(64, 64) == (16, 16)  # SD1 at 512 px
    assert capture_hw(128, 128) == (32, 32)  # SDXL at 1024 px
    assert capture_hw(96, 64) == (24, 16)
    assert capture_hw(97, 63) == (25, 16)  # ceil(H/32) x ceil(W/32) for 776 x 504 px


def test_restores_previous_instance_forward_and_class_forward(unet):
    modules = cross_attention_modules(unet)
    marker = []

    def other_extension_forward(x, context=None, mask=None, **kwargs):
        marker.append(1)
        return CrossAttention.forward(modules[0], x, context, mask)

    modules[0].forward = other_extension_forward
    before = forwards(modules)
    cap = AttentionCapture()
    cap.install(modules)
    assert all(m.__dict__.get("forward") is not None for m in modules)
    assert cap.remove() == len(modules)
    assert forwards(modules) == before
    assert "forward" not in modules[1].__dict__  # instance attribute deleted: the class forward is back
    assert cap.remove() == 0  # idempotent


def test_hooks_removed_after_exception_inside_forward(unet):
    modules = cross_attention_modules(unet)
    before = forwards(modules)
    cap = AttentionCapture()
    with pytest.raises(ZeroDivisionError), cap.installed_on(modules), cap.capturing(64):
        raise ZeroDivisionError
    assert forwards(modules) == before and not cap.active


def test_class_level_optimisation_swap_still_works(unet, text_encoder):
    """WebUI optimisations replace CrossAttention.forward on the class; the capture must call through it."""
    modules = cross_attention_modules(unet)
    calls = []
    original = CrossAttention.forward

    def sdp_forward(self, x, context=None, mask=None, **kwargs):
        calls.append(1)
        return sdp_attention_forward(self, x, context, mask)

    CrossAttention.forward = sdp_forward
    try:
        x, t = torch.randn(1, 4, 32, 32), torch.tensor([500])
        ctx = text_encoder(["a cat"])
        with torch.no_grad():
            ref = unet(x, t, context=ctx)
            cap = AttentionCapture()
            with cap.installed_on(modules):
                with cap.capturing(64):
                    out = unet(x, t, context=ctx)
                n_calls = len(calls)
            torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
        # 7 blocks x (attn1 + attn2) in the reference call; while capturing, the 4 captured attn2 run explicitly
        assert n_calls == 14 + 10
        assert all(m.forward.__func__ is sdp_forward for m in modules)
    finally:
        CrossAttention.forward = original


class SgmSignatureCrossAttention(CrossAttention):
    """ldm's CrossAttention with the forward signature of sgm's (SDXL), whose BasicTransformerBlock calls
    attn2(x, context=..., additional_tokens=None) and attn1 with n_times_crossframe_attn_in_self=0."""

    def forward(self, x, context=None, mask=None, additional_tokens=None, n_times_crossframe_attn_in_self=0):
        n_extra = 0 if additional_tokens is None else additional_tokens.shape[1]
        if n_extra:
            x = torch.cat([additional_tokens, x], dim=1)
        out = super().forward(x, context, mask)
        return out[:, n_extra:]


def test_sgm_call_signature_is_captured_and_extras_pass_through():
    torch.manual_seed(0)
    module = SgmSignatureCrossAttention(query_dim=64, context_dim=96, heads=2, dim_head=32).eval()  # heads by channels
    x, ctx, extra = torch.randn(2, 64, 64), torch.randn(2, 77, 96), torch.randn(2, 3, 64)
    with torch.no_grad():
        ref = module(x, context=ctx)
        ref_extra = module(x, context=ctx, additional_tokens=extra)
        cap = AttentionCapture()
        with cap.installed_on([module]), cap.capturing(64) as probs:
            out = module(x, context=ctx, additional_tokens=None)  # how sgm's transformer block calls attn2
            out_default = module(x, context=ctx, n_times_crossframe_attn_in_self=0)
            assert len(probs) == 2 and probs[0].shape == (2, 64, 77)
            out_extra = module(x, context=ctx, additional_tokens=extra)  # changes the attention: not captured
            assert len(probs) == 2
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_default, ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(out_extra, ref_extra)
    assert "forward" not in module.__dict__


def test_early_exit_stops_after_needed_layers(unet, text_encoder):
    modules = cross_attention_modules(unet)
    cap = AttentionCapture()
    with cap.installed_on(modules), cap.capturing(64, stop_after=2) as probs, pytest.raises(CaptureComplete):
        unet(torch.randn(1, 4, 32, 32), torch.tensor([10]), context=text_encoder(["a cat"]))
    assert len(probs) == 2


def test_concept_maps_shapes_and_ranges():
    torch.manual_seed(0)
    probs = torch.rand(64, 77).softmax(-1)
    concepts = [ConceptTokens("cat", (2,)), ConceptTokens("traffic light", (4, 5))]
    maps = concept_maps(probs, (8, 8), keys=6, concepts=concepts)
    assert maps.shape == (2, 8, 8)
    assert (maps >= 0).all() and (maps <= 1).all()
    # manual: softmax over tokens 1..6 of probs*100, mean of tokens 4,5, smoothed
    text = (probs[:, 1:7] * 100).softmax(-1)
    manual = smooth(torch.stack([text[:, 1].reshape(8, 8), text[:, 3:5].mean(1).reshape(8, 8)]))
    torch.testing.assert_close(maps, manual)


def test_concept_maps_read_a_later_chunk_at_its_own_key_columns():
    """Two chunks (154 keys): the softmax spans the real tokens of both, and a concept in chunk 2 reads its
    own columns; start/end/padding columns of either chunk never enter."""
    torch.manual_seed(1)
    probs = torch.rand(64, 154).softmax(-1)
    keys = (*range(1, 76), *range(78, 81))  # 75 real tokens in chunk 1, 3 in chunk 2
    dog = ConceptTokens("dog", (80,))
    maps = concept_maps(probs, (8, 8), keys=keys, concepts=[ConceptTokens("cat", (3,)), dog])
    text = (probs[:, list(keys)] * 100).softmax(-1)
    manual = smooth(torch.stack([text[:, 2].reshape(8, 8), text[:, 77].reshape(8, 8)]))
    torch.testing.assert_close(maps, manual)
    poked = probs.clone()
    poked[:, 80] += 5.0  # only dog's own column changes dog's map ...
    poked[:, 77] += 5.0  # ... chunk 1's end token is not a prompt token
    poked[:, 81:] += 5.0  # nor chunk 2's end and padding
    again = concept_maps(poked, (8, 8), keys=keys, concepts=[dog])
    text = (poked[:, list(keys)] * 100).softmax(-1)
    torch.testing.assert_close(again[0], smooth(text[:, 77].reshape(1, 8, 8))[0])
    assert not torch.allclose(again[0], maps[1])
    with pytest.raises(ValueError, match="not a real prompt token"):
        concept_maps(probs, (8, 8), keys=keys, concepts=[ConceptTokens("end", (77,))])


def test_smoothing_preserves_constant_maps_and_uses_reflect_padding():
    const = torch.full((1, 5, 5), 0.3)
    torch.testing.assert_close(smooth(const), const)
    spike = torch.zeros(1, 5, 5)
    spike[0, 0, 0] = 1.0
    out = smooth(spike)
    assert out[0, 0, 0] < 1.0 and out[0, 0, 1] > 0 and out[0, 1, 1] > 0
