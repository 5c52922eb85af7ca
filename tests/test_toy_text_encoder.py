"""The toy text encoder: closed vocabulary, clear errors, the empty prompt as the unconditional embedding."""
import pytest
import torch

from minianimate.toy.text_encoder import VOCAB, ToyTextEncoder, WordTokenizer


def test_tokenizer_pads_to_fixed_length_and_starts_with_bos():
    ids = WordTokenizer(max_len=8)(["a red square moving left", ""])
    assert ids.shape == (2, 8)
    assert ids[0, 0] == VOCAB.index("<bos>") and ids[0, 2] == VOCAB.index("red")
    assert (ids[1, 1:] == VOCAB.index("<pad>")).all()


def test_unknown_words_are_a_clear_error():
    with pytest.raises(ValueError, match=r"outside the toy vocabulary: \['purple'\]"):
        WordTokenizer()(["a purple square"])


def test_encode_prompt_shapes_and_distinct_prompts():
    torch.manual_seed(0)
    encoder = ToyTextEncoder(dim=32, layers=1, heads=4)
    out = encoder.encode_prompt(["a red square", "a blue circle", ""])
    assert out.shape == (3, 8, 32)
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[0], out[2])
    assert torch.equal(encoder.encode_prompt([""])[0], out[2])  # "" is one fixed unconditional embedding
