"""Attribute binding (engine/binding.py): the term on hand-made maps, token grouping by word, the session and
the fake WebUI host with binding on, and that binding off changes nothing."""

import pytest
import torch
from modules import infotext_utils
from modules.api import api

from segret_lib.engine.binding import WordMaps, binding_loss, binding_parts, has_modifiers, word_tokens
from segret_lib.engine.tokens import ConceptTokens, PromptTokens, concept_words, locate_concept, map_concepts
from segret_lib.settings.params import ParamError, SegretParams
from segret_lib.testing.profiling import per_refined_step
from tests.helpers import make_rig
from tests.webui_host import Host

PROMPT = "a red cat and a blue dog"
CONCEPTS = ("red cat", "blue dog")


def blob(x0: int, x1: int, size: int = 8) -> torch.Tensor:
    """A map that is 1 on columns x0..x1-1 and 0.01 elsewhere."""
    m = torch.full((size, size), 0.01)
    m[:, x0:x1] = 1.0
    return m


def reference_binding(heads, mods, owner):
    """One modifier and one head at a time."""
    total = heads.new_zeros(())
    for k, c in enumerate(owner):
        p = mods[k] / mods[k].sum()
        overlap = [torch.minimum(p, h.detach() / h.detach().sum()).sum() for h in heads]
        others = [o for n, o in enumerate(overlap) if n != c]
        total = total + (1 - overlap[c]) + (sum(others) / len(others) if others else 0.0)
    return total / len(owner)


# ---------------------------------------------------------------------------------------- the term
def test_modifier_on_its_noun_has_no_pull_and_no_push():
    heads = torch.stack([blob(0, 3), blob(5, 8)])
    words = WordMaps(heads, heads[:1].clone() * 3.0, (0,))  # the modifier's map is its noun's (any scale)
    pull, push = binding_parts(words)
    assert pull.item() == pytest.approx(0.0, abs=1e-6)
    assert push.item() == pytest.approx(float(torch.minimum(heads[0] / heads[0].sum(),
                                                            heads[1] / heads[1].sum()).sum()), abs=1e-6)
    assert push.item() < 0.05


def test_modifier_on_the_other_noun_is_pulled_back_and_pushed_off():
    heads = torch.stack([blob(0, 3), blob(5, 8)])
    mod = blob(5, 8).unsqueeze(0).requires_grad_(True)  # "red" of "red cat" lies on the dog
    loss = binding_loss(WordMaps(heads, mod, (0,)))
    pull, push = binding_parts(WordMaps(heads, mod.detach(), (0,)))
    assert pull.item() > 0.9 and push.item() > 0.9 and loss.item() == pytest.approx((pull + push).item())
    (grad,) = torch.autograd.grad(loss, mod)
    # descending moves mass from the dog's columns onto the cat's
    assert grad[0, :, :3].mean() < 0 < grad[0, :, 5:].mean()
    # gradient descent on the modifier's logits (its map a softmax over the pixels, as attention is)
    logits = mod.detach().log().clone()
    losses, on_cat = [], []
    for _ in range(30):
        logits.requires_grad_(True)
        m = logits.flatten(1).softmax(-1).reshape(1, 8, 8)
        value = binding_loss(WordMaps(heads, m, (0,)))
        (g,) = torch.autograd.grad(value, logits)
        losses.append(value.item())
        on_cat.append(float(m.detach()[0, :, :3].sum()))
        logits = logits.detach() - 50.0 * g
    assert losses[-1] < losses[0] - 0.5 and on_cat[-1] > on_cat[0] + 0.5, (losses, on_cat)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_vectorised_term_equals_the_modifier_loop_with_its_gradient(n):
    g = torch.Generator().manual_seed(n)
    heads = torch.rand(n, 8, 8, generator=g).requires_grad_(True)
    owner = (*range(n), 0)  # every concept one modifier, the first two
    mods = torch.rand(len(owner), 8, 8, generator=g).requires_grad_(True)
    ours, ref = binding_loss(WordMaps(heads, mods, owner)), reference_binding(heads, mods, owner)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    (g1,) = torch.autograd.grad(ours, mods)
    (g2,) = torch.autograd.grad(ref, mods)
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-7)
    assert not ours.requires_grad or torch.autograd.grad(ours, heads, allow_unused=True)[0] is None  # targets
    summed = binding_loss(WordMaps(heads, mods, owner), normalise=False)
    assert summed.item() == pytest.approx(ours.item() * len(owner), rel=1e-5)  # v1: the sum, balanced: the mean


def test_one_word_concepts_have_nothing_to_bind():
    concepts = [ConceptTokens("cat", (2,)), ConceptTokens("hippopotamus", (5, 6, 7))]
    assert not has_modifiers(concepts)
    tokens, owner = word_tokens(concepts)
    assert owner == () and [t.positions for t in tokens] == [(2,), (5, 6, 7)]
    assert binding_loss(WordMaps(torch.rand(2, 8, 8), torch.zeros(0, 8, 8), ())) is None
    assert binding_loss(None) is None


# ---------------------------------------------------------------------------------------- token grouping
def test_words_of_a_concept_and_the_brace_syntax():
    assert concept_words("red  circle") == ["red", "circle"]
    assert concept_words("red {traffic light}") == ["red", "traffic light"]
    assert concept_words("{traffic light}") == ["traffic light"]
    assert concept_words("cat") == ["cat"]


def test_grouping_by_word_with_multi_token_words(text_encoder):
    enc = text_encoder
    pt = enc.prompt_tokens("a photo of a red hippopotamus next to a small blue traffic light")
    hippo = locate_concept(pt, "red hippopotamus", enc.encode)
    n = len(enc.encode("hippopotamus"))
    assert n > 1
    assert hippo.groups == ((5,), tuple(range(6, 6 + n))) and hippo.positions == tuple(range(5, 6 + n))
    assert hippo.head == tuple(range(6, 6 + n)) and hippo.modifiers == ((5,),)
    light = locate_concept(pt, "small blue traffic light", enc.encode)
    assert [len(g) for g in light.groups] == [1, 1, 1, 1] and light.head == (light.positions[-1],)
    braced = locate_concept(pt, "blue {traffic light}", enc.encode)
    assert braced.positions == light.positions[1:]
    assert braced.modifiers == (light.positions[1:2],) and braced.head == light.positions[2:]
    whole = locate_concept(pt, "{traffic light}", enc.encode)
    assert whole.modifiers == () and whole.head == light.positions[2:]
    heads, owner = word_tokens([hippo, braced])
    assert [t.positions for t in heads] == [hippo.head, braced.head, (5,), light.positions[1:2]]
    assert owner == (0, 1)


def test_grouping_with_textual_inversion_names(text_encoder):
    enc = text_encoder
    real = [*enc.encode("a photo of a red"), 0, 0, *enc.encode("and a dog")]  # a 2-vector embedding at 6, 7
    pt = PromptTokens.from_ids(real, enc.bos, enc.eos)
    pt = PromptTokens(pt.ids, pt.chunk_real, (("MyCat", (6, 7)),))
    found, warnings = map_concepts(pt, ["red mycat", "mycat", "blue mycat"], enc.encode)
    assert warnings == ["'mycat' uses the same tokens as another concept; dropped",
                        "'blue mycat' is not in the prompt"]
    assert found[0].groups == ((5,), (6, 7)) and found[0].positions == (5, 6, 7)
    alone, _ = map_concepts(pt, ["MyCat"], enc.encode)
    assert alone[0].groups == ((6, 7),) and alone[0].modifiers == ()


# ---------------------------------------------------------------------------------------- the session
@pytest.fixture(scope="module")
def rig():
    return make_rig()


def sample(rig, concepts=CONCEPTS, prompt=PROMPT, **params):
    session = rig.session([prompt], concepts=concepts, **params)
    out, _ = rig.sample([prompt], steps=4, session=session)
    return out, session


def test_binding_off_or_without_modifiers_is_bit_identical(rig):
    base, session = sample(rig)
    assert "bind" not in session.passes[0].results[0].parts
    off, _ = sample(rig, bind_weight=0.0)
    assert torch.equal(base, off)
    # the grouping by word alone changes nothing: concepts without it refine the same
    flat = rig.session([PROMPT], concepts=CONCEPTS)
    flat.concepts = [[ConceptTokens(c.word, c.positions) for c in flat.concepts[0]]]
    out, _ = rig.sample([PROMPT], steps=4, session=flat)
    assert torch.equal(base, out)
    single, _ = sample(rig, concepts=("cat", "dog"))
    single_bound, session = sample(rig, concepts=("cat", "dog"), bind_weight=5.0)
    assert torch.equal(single, single_bound) and "bind" not in session.passes[0].results[0].parts


def test_binding_on_changes_the_image_and_reports_its_term(rig):
    base, _ = sample(rig)
    bound, session = sample(rig, bind_weight=5.0)
    assert (bound - base).abs().max() > 1e-4
    results = session.passes[0].results
    assert all(r.updates == 1 and 0.0 <= r.parts["bind"] <= 2.0 for r in results)
    assert "L_bind " in session.summary()
    _, session = sample(rig, bind_weight=5.0, method="both")
    assert "bind" in session.passes[0].results[0].parts and "aae" in session.passes[0].results[0].parts


def test_binding_costs_no_extra_sync_and_no_extra_unet_call(rig):
    counts = {}
    for weight in (0.0, 5.0):
        session = rig.session([PROMPT], concepts=CONCEPTS, bind_weight=weight)
        with per_refined_step(session) as steps:
            rig.sample([PROMPT], steps=4, session=session)
        counts[weight] = steps
    assert max(c.syncs for c in counts[5.0]) <= 2
    assert [c.syncs for c in counts[5.0]] == [c.syncs for c in counts[0.0]]
    # the same UNet call: the forward's ops grow by the word maps and the term, not by a UNet pass
    extra = counts[5.0][1].ops - counts[0.0][1].ops
    assert 0 < extra < counts[0.0][1].ops // 4


def test_binding_lowers_its_term_over_updates(rig):
    from segret_lib.engine.schedule import latent_scale
    from segret_lib.engine.session import PassInfo

    session = rig.session([PROMPT], concepts=CONCEPTS, seg_weight=0.0, ret_weight=0.0, bind_weight=1.0,
                          step_size=400.0)
    session.begin_pass(PassInfo((32, 32), 50))
    cond = rig.encoder([PROMPT])
    sigma = rig.denoiser.get_sigmas(50)[10]

    def run(xm, s, rows):
        return rig.denoiser(xm, s, cond={"c_crossattn": [cond[list(rows)]]})

    def forward(xm):
        return session._forward_maps(xm, sigma.reshape(1), [0], torch.tensor([0]), run, words=True)

    x = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0)) * sigma
    s = latent_scale(sigma.reshape(1), "sigma").reshape(1, 1, 1, 1)
    values = []
    for _ in range(4):
        x, result = session.refiner.refine(x, s, 10, 50, forward)
        values.append(result.parts["bind"])
    session.close()
    assert values[-1] < values[0], values


# ---------------------------------------------------------------------------------------- settings
def test_bind_weight_validation_and_infotext():
    with pytest.raises(ParamError, match="bind_weight"):
        SegretParams.create(bind_weight=-1)
    with pytest.raises(ParamError, match="bind_weight"):
        SegretParams.create(bind_weight="nan")
    p = SegretParams.create(enabled=True, concepts="red cat, blue dog", bind_weight=1.5)
    info = p.to_infotext()
    assert info["A-STAR bind weight"] == "1.5"
    assert SegretParams.from_infotext(info) == p
    off = p.replace(bind_weight=0.0)
    assert "A-STAR bind weight" not in off.to_infotext()
    # an infotext written before binding (no key) pastes with binding off, whatever the default
    old = {k: v for k, v in info.items() if k != "A-STAR bind weight"}
    assert SegretParams.from_infotext(old).bind_weight == 0.0
    assert SegretParams.create(enabled=True, concepts="red cat", seg_weight=0, ret_weight=0, bind_weight=1).bind_weight
    assert SegretParams.create(method="aae").bind_weight == 0.0


# ---------------------------------------------------------------------------------------- the fake WebUI host
def test_fake_host_binding_through_the_api_dict_and_infotext_round_trip():
    host = Host("sd1")
    settings = {"concepts": "red cat, blue dog", "bind_weight": 2.0}
    _, off = host.txt2img(prompt=PROMPT, script_args=api.init_script_args(
        {"A-STAR": {"args": [{"concepts": "red cat, blue dog"}]}}, host.runner), steps=3)
    _, on = host.txt2img(prompt=PROMPT, script_args=api.init_script_args(
        {"A-STAR": {"args": [settings]}}, host.runner), steps=3)
    assert (torch.stack(on.latents) - torch.stack(off.latents)).abs().max() > 1e-5
    info = infotext_utils.parse_generation_parameters(on.infotexts[0])
    assert info["A-STAR bind weight"] == "2" and "L_bind" in info["A-STAR result"]
    assert "A-STAR warnings" not in info
    assert "A-STAR bind weight" not in infotext_utils.parse_generation_parameters(off.infotexts[0])
    pasted = SegretParams.from_infotext(info)
    assert pasted.bind_weight == 2.0 and pasted.concepts == ("red cat", "blue dog")
    again = {k: getattr(pasted, k) for k in ("concepts", "bind_weight", "seg_weight", "ret_weight", "step_size",
                                              "step_rule", "method")}
    _, redo = host.txt2img(prompt=PROMPT, script_args=api.init_script_args(
        {"A-STAR": {"args": [again]}}, host.runner), steps=3)
    assert torch.equal(torch.stack(redo.latents), torch.stack(on.latents))
    # the overlay sheet after the images: a second row (noun and modifier maps) with binding on
    sheets = {}
    for weight in (0.0, 2.0):
        _, res = host.txt2img(prompt=PROMPT, script_args=api.init_script_args(
            {"A-STAR": {"args": [{**settings, "bind_weight": weight, "show_maps": True}]}}, host.runner), steps=3)
        assert len(res.images) == 2
        sheets[weight] = res.images[1].size
    assert sheets[2.0][1] > 1.9 * sheets[0.0][1]


# ---------------------------------------------------------------------------------------- the overlay
def test_overlay_sheet_shows_each_modifier_next_to_its_noun(rig):
    from PIL import Image

    from segret_lib.render.overlays import overlay_sheet

    _, session = sample(rig, bind_weight=2.0, show_maps=True, maps_view="overlay")
    (maps,) = session.overlay_result()
    assert maps.words == ["red cat", "blue dog"]
    assert maps.bound.words == ["red cat: cat", "red cat: red", "blue dog: dog", "blue dog: blue"]
    assert maps.bound.steps == maps.steps == 4
    # a two-word concept's map (mean of its tokens' maps) is the mean of its noun's and its modifier's
    torch.testing.assert_close(maps.maps[0], (maps.bound.maps[0] + maps.bound.maps[1]) / 2, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(maps.maps[1], (maps.bound.maps[2] + maps.bound.maps[3]) / 2, rtol=1e-4, atol=1e-6)
    image = Image.new("RGB", (64, 64), (128, 128, 128))
    sheet = overlay_sheet(image, maps)
    one_row = overlay_sheet(image, type(maps)(maps.words, maps.maps, maps.steps))
    assert sheet.size[1] > 1.9 * one_row.size[1] and sheet.size[0] >= 4 * one_row.size[1]
    # binding off: no word maps kept, the sheet as before
    _, off = sample(rig, show_maps=True, maps_view="overlay")
    assert off.overlay_words is None and off.overlay_result()[0].bound is None


def test_binding_with_low_vram_recomputation_matches_the_normal_pass(rig):
    normal, _ = sample(rig, bind_weight=2.0)
    low, session = sample(rig, bind_weight=2.0, low_vram=True)
    assert session.low_vram and "bind" in session.passes[0].results[0].parts
    torch.testing.assert_close(low, normal, rtol=1e-4, atol=1e-5)
