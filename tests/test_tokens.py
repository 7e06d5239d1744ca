import pytest

from segret_lib.engine.tokens import (
    CHUNK_LEN,
    CHUNK_TOKENS,
    PromptTokens,
    TokenMappingError,
    locate_concept,
    map_concepts,
)


def test_single_token_words(text_encoder):
    pt = text_encoder.prompt_tokens("a cat and a dog")
    found, warnings = map_concepts(pt, ["cat", "dog"], text_encoder.encode, text_encoder.decode)
    assert warnings == []
    assert [c.positions for c in found] == [(2,), (5,)]
    assert pt.ids[0] == text_encoder.bos and pt.ids[pt.n_real + 1] == text_encoder.eos and len(pt.ids) == 77


def test_multi_token_phrase_and_split_word(text_encoder):
    prompt = "a photo of a traffic light next to a hippopotamus"
    pt = text_encoder.prompt_tokens(prompt)
    light = locate_concept(pt, "traffic light", text_encoder.encode)
    assert light.positions == (5, 6)
    hippo_ids = text_encoder.encode("hippopotamus")
    assert len(hippo_ids) > 1  # the BPE splits it
    hippo = locate_concept(pt, "hippopotamus", text_encoder.encode)
    assert [pt.ids[p] for p in hippo.positions] == hippo_ids


def test_case_and_punctuation_insensitive(text_encoder):
    pt = text_encoder.prompt_tokens("A CAT, and a Dog.")
    found, warnings = map_concepts(pt, ["Cat", "dog"], text_encoder.encode)
    assert warnings == [] and len(found) == 2


def test_unknown_word_is_dropped_with_message(text_encoder):
    pt = text_encoder.prompt_tokens("a cat and a dog")
    found, warnings = map_concepts(pt, ["cat", "horse"], text_encoder.encode, text_encoder.decode)
    assert [c.word for c in found] == ["cat"]
    assert len(warnings) == 1 and "'horse' is not in the prompt" in warnings[0] and "cat" in warnings[0]


def test_concept_beyond_first_chunk(text_encoder):
    filler = " ".join(["red"] * (CHUNK_TOKENS + 3))
    pt = text_encoder.prompt_tokens(f"a cat {filler} and a dog")
    assert pt.chunk_real == (CHUNK_TOKENS, 8) and len(pt.ids) == 2 * CHUNK_LEN
    found, warnings = map_concepts(pt, ["cat", "dog"], text_encoder.encode)
    assert warnings == []
    dog = found[1].positions[0]
    assert dog == CHUNK_LEN + 1 + 7 and pt.ids[dog] == text_encoder.encode("dog")[0]
    # the softmax spans the real tokens of both chunks: no start/end/padding key of either
    keys = pt.real_positions
    assert len(keys) == CHUNK_TOKENS + 8 and CHUNK_LEN not in keys and CHUNK_LEN - 1 not in keys
    assert keys[CHUNK_TOKENS] == CHUNK_LEN + 1


def test_concept_split_between_chunks_is_named(text_encoder):
    enc = text_encoder
    hippo = enc.encode("hippopotamus")
    assert len(hippo) >= 2
    filler = enc.encode(" ".join(["red"] * (CHUNK_TOKENS - 1)))
    pt = PromptTokens.from_ids([*filler, *hippo, *enc.encode("and a cat")], enc.bos, enc.eos)
    found, warnings = map_concepts(pt, ["hippopotamus", "cat"], enc.encode)
    assert [c.word for c in found] == ["cat"]
    assert "split between token chunks 1 and 2" in warnings[0] and "BREAK" in warnings[0]


def test_first_occurrence_in_any_chunk(text_encoder):
    enc = text_encoder
    pt = PromptTokens.from_chunks([enc.encode("a photo"), enc.encode("a dog"), enc.encode("a dog")], enc.bos, enc.eos)
    assert pt.chunk_real == (2, 2, 2)
    assert locate_concept(pt, "dog", enc.encode).positions == (CHUNK_LEN + 2,)
    assert pt.ids[CHUNK_LEN] == enc.bos and pt.ids[CHUNK_LEN + 3] == enc.eos


def test_overlapping_concepts_and_empty(text_encoder):
    pt = text_encoder.prompt_tokens("a traffic light")
    found, warnings = map_concepts(pt, ["traffic light", "light"], text_encoder.encode)
    assert [c.word for c in found] == ["traffic light"] and "same tokens" in warnings[0]
    with pytest.raises(TokenMappingError, match="no tokens"):
        locate_concept(pt, "  ", text_encoder.encode)


def test_from_ids_padding():
    pt = PromptTokens.from_ids([5, 6, 7], bos=1, eos=2, pad=0)
    assert pt.ids[:6] == (1, 5, 6, 7, 2, 0) and len(pt.ids) == 77 and pt.n_real == 3


def test_named_spans_place_embeddings_that_have_no_bpe_ids(text_encoder):
    enc = text_encoder
    real = [*enc.encode("a photo of"), 0, 0, *enc.encode("and a dog")]  # a 2-vector embedding as placeholders
    pt = PromptTokens.from_ids(real, enc.bos, enc.eos)
    pt = PromptTokens(pt.ids, pt.chunk_real, (("MyCat", (4, 5)),))
    found, warnings = map_concepts(pt, ["mycat", "dog", "MyCat dog"], enc.encode)
    assert [(c.word, c.positions) for c in found] == [("mycat", (4, 5)), ("dog", (8,))]
    assert warnings == ["'MyCat dog' is not in the prompt"]
