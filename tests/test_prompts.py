"""Prompts as users write them, through the fake WebUI host with the real CLIP BPE tokenizer: concepts past
75 tokens and after BREAK, in AND sub-prompts, in prompt editing and alternation, embeddings in later chunks."""

import pytest
import torch
from modules import infotext_utils

from segret_lib.engine import session as session_module
from segret_lib.engine.tokens import CHUNK_LEN, CHUNK_TOKENS
from segret_lib.hosts import webui_prompts
from tests.webui_host import Host

ON = {"enabled": True, "concepts": "cat, dog"}


@pytest.fixture(scope="module")
def host():
    return Host("sd1")


@pytest.fixture()
def maps_spy(monkeypatch):
    """Records, per concept_maps call of a refined step, the keys and the concepts (word, positions, part)."""
    calls = []
    original = session_module.concept_maps

    def spy(probs, hw, keys, concepts, *args, **kwargs):
        calls.append((tuple(keys) if not isinstance(keys, int) else keys,
                      [(c.word, c.positions, c.part) for c in concepts], probs.shape[-1]))
        return original(probs, hw, keys, concepts, *args, **kwargs)

    monkeypatch.setattr(session_module, "concept_maps", spy)
    return calls


@pytest.fixture()
def unet_contexts(host):
    """Contexts the UNet saw in calls with gradients enabled (the refinement passes)."""
    seen = []

    def hook(module, args, kwargs):
        if torch.is_grad_enabled():
            seen.append(kwargs["context"].detach().clone())

    handle = host.model.model.diffusion_model.register_forward_pre_hook(hook, with_kwargs=True)
    yield seen
    handle.remove()


def info_of(res, i=0):
    return infotext_utils.parse_generation_parameters(res.infotexts[i])


def word_id(host, word):
    return webui_prompts.encode_word(host.model.cond_stage_model, word)[0]


def test_break_puts_dog_in_chunk_two(host, maps_spy):
    _, res = host.txt2img(prompt="a photo of a cat BREAK a dog", script_args=host.args(**ON), steps=3)
    info = info_of(res)
    assert "A-STAR warnings" not in info and info["A-STAR result"].startswith("first pass: 3/3")
    keys, concepts, n_keys = maps_spy[0]
    assert n_keys == 2 * CHUNK_LEN  # the context the UNet attends to has both chunks
    assert keys == (1, 2, 3, 4, 5, CHUNK_LEN + 1, CHUNK_LEN + 2)
    assert concepts == [("cat", (5,), 0), ("dog", (CHUNK_LEN + 2,), 0)]


def test_concept_near_the_end_of_a_150_token_prompt(host, maps_spy):
    filler = " ".join(["blue"] * 140)
    prompt = f"a cat {filler} and a dog"
    pt = webui_prompts.prompt_tokens(host.model.cond_stage_model, prompt)
    assert pt.n_real == 145 and len(pt.chunk_real) == 2
    _, res = host.txt2img(prompt=prompt, script_args=host.args(**ON), steps=3)
    info = info_of(res)
    assert "A-STAR warnings" not in info and info["A-STAR result"].startswith("first pass: 3/3")
    keys, concepts, _ = maps_spy[0]
    dog = concepts[1][1][0]
    assert dog > 100 and pt.ids[dog] == word_id(host, "dog") and dog in keys and len(keys) == 145


def test_and_refines_each_concept_with_its_own_subprompt(host, maps_spy, unet_contexts):
    prompt = "a photo of a cat AND a photo of a dog"
    _, res = host.txt2img(prompt=prompt, script_args=host.args(**ON), steps=3, batch_size=2)
    info = info_of(res)
    assert "A-STAR warnings" not in info and info["A-STAR result"].startswith("first pass: 3/3")
    # one UNet row per (image, sub-prompt): cat from the first sub-prompt, dog from the second
    assert {tuple(c) for _, cs, _ in maps_spy for c in cs} == {("cat", (5,), 0), ("dog", (5,), 1)}
    enc = host.model.cond_stage_model
    cat_cond, dog_cond = enc(["a photo of a cat"])[0], enc(["a photo of a dog"])[0]
    context = unet_contexts[0]
    assert context.shape[0] == 4  # 2 images x 2 sub-prompts: the extra cost is one UNet row per image
    for row, expected in enumerate([cat_cond, dog_cond, cat_cond, dog_cond]):
        torch.testing.assert_close(context[row], expected)


def test_and_with_both_concepts_in_the_first_subprompt_costs_nothing_extra(host, unet_contexts):
    _, res = host.txt2img(prompt="a cat and a dog AND a forest:0.5", script_args=host.args(**ON), steps=3)
    assert info_of(res)["A-STAR result"].startswith("first pass: 3/3") and "A-STAR warnings" not in info_of(res)
    assert {c.shape[0] for c in unet_contexts} == {1}


def test_prompt_editing_follows_the_schedule(host, maps_spy):
    prompt = "a photo of a [cat:dog:0.5] and a bird"
    _, res = host.txt2img(prompt=prompt, script_args=host.args(enabled=True, concepts="cat, dog, bird"), steps=6)
    info = info_of(res)
    # schedule [[3, cat], [6, dog]]: the WebUI uses 'cat' at steps 0-3 and 'dog' at steps 4-5 (0-based)
    assert "'cat' is in the prompt only at steps 1-4 of 6" in info["A-STAR warnings"]
    assert "'dog' is in the prompt only at steps 5-6 of 6" in info["A-STAR warnings"]
    assert info["A-STAR result"].startswith("first pass: 6/6")
    words = [[w for w, _, _ in cs] for _, cs, _ in maps_spy]
    assert words[:4] == [["cat", "bird"]] * 4 and words[4:6] == [["dog", "bird"]] * 2
    assert [cs[0][1] for _, cs, _ in maps_spy[:6]] == [(5,)] * 6  # cat and dog: the same slot


def test_alternation_switches_with_the_conditioning(host, maps_spy):
    _, res = host.txt2img(prompt="a [cat|dog] on grass", steps=4,
                          script_args=host.args(enabled=True, concepts="cat, dog, grass"))
    info = info_of(res)
    assert info["A-STAR result"].startswith("first pass: 4/4")
    # schedule [[1, cat], [2, dog], [3, cat], [4, dog]] read with the WebUI's `step <= end_at_step` at 0-based
    # steps 0..3: cat, cat, dog, cat
    assert [[w for w, _, _ in cs] for _, cs, _ in maps_spy[:4]] == [["cat", "grass"]] * 2 + [["dog", "grass"],
                                                                                            ["cat", "grass"]]
    assert "'dog' is in the prompt only at steps 3 of 4" in info["A-STAR warnings"]


def test_no_concept_anywhere_says_so(host):
    _, res = host.txt2img(prompt="a bird BREAK a tree AND a car", script_args=host.args(**ON), steps=3)
    warnings = info_of(res)["A-STAR warnings"]
    assert "'cat' is not in the prompt" in warnings and "nothing to refine" in warnings


def test_split_concept_message_names_the_chunks(host):
    enc = host.model.cond_stage_model
    filler = " ".join(["blue"] * (CHUNK_TOKENS - 1))
    _, res = host.txt2img(prompt=f"{filler} hippopotamus and a cat", steps=3,
                          script_args=host.args(enabled=True, concepts="hippopotamus, cat"))
    assert len(webui_prompts.encode_word(enc, "hippopotamus")) > 1
    assert "'hippopotamus' is split between token chunks 1 and 2" in info_of(res)["A-STAR warnings"]


def test_embedding_in_a_later_chunk(host, monkeypatch):
    encoder = host.model.cond_stage_model
    monkeypatch.setattr(encoder, "embeddings", {})
    encoder.add_embedding("tinycat", vectors=2)
    pt = webui_prompts.prompt_tokens(encoder, "a photo BREAK of tinycat and a dog")
    assert pt.spans == (("tinycat", (CHUNK_LEN + 2, CHUNK_LEN + 3)),)
    _, res = host.txt2img(prompt="a photo BREAK of tinycat and a dog", steps=3,
                          script_args=host.args(enabled=True, concepts="tinycat, dog"))
    assert "A-STAR warnings" not in info_of(res) and info_of(res)["A-STAR result"].startswith("first pass: 3/3")


def test_sdxl_break_and_and():
    h = Host("sdxl")
    long_prompt = "a cat " + " ".join(["blue"] * 140) + " and a dog"
    for prompt in ("a photo of a cat BREAK a dog", "a photo of a cat AND a photo of a dog", long_prompt):
        _, res = h.txt2img(prompt=prompt, script_args=h.args(**ON), steps=3)
        info = info_of(res)
        assert "A-STAR warnings" not in info and info["A-STAR result"].startswith("first pass: 3/3"), prompt
