"""The testbed's character-level tokenizer, before and after a save/reload."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer, LlamaConfig

from sps.models.tokenizer import build_char_tokenizer
from sps.tasks.countdown import ALPHABET

TEXT = "  8 5 1 7>14:\n5-1=4,8/4=2 ,7*2=14\n\n  "


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer(ALPHABET)


def test_one_id_per_character_and_no_special_tokens_added(tokenizer):
    ids = tokenizer.encode(TEXT)
    assert ids == tokenizer(TEXT).input_ids == tokenizer.encode(TEXT, add_special_tokens=False)
    assert tokenizer.convert_ids_to_tokens(ids) == list(TEXT)
    assert tokenizer.decode(ids) == TEXT
    assert len(tokenizer) == len(ALPHABET) + 4


def test_special_tokens(tokenizer):
    assert [
        tokenizer.pad_token_id,
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.unk_token_id,
    ] == [0, 1, 2, 3]
    assert tokenizer.padding_side == "left"
    ids = [tokenizer.bos_token_id, *tokenizer.encode("3*2=6"), tokenizer.eos_token_id, tokenizer.pad_token_id]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "3*2=6"
    assert tokenizer.encode("a1") == [tokenizer.unk_token_id, tokenizer.convert_tokens_to_ids("1")]


def test_left_padding(tokenizer):
    batch = tokenizer(["1+2=3", "10+20=30"], padding=True)
    assert batch.input_ids[0][:3] == [tokenizer.pad_token_id] * 3 and batch.attention_mask[0][:4] == [
        0,
        0,
        0,
        1,
    ]


def test_round_trip_after_save_and_autotokenizer_reload(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2
    ).save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    ids = reloaded.encode(TEXT)
    assert ids == tokenizer.encode(TEXT) and len(ids) == len(TEXT)
    assert reloaded.decode(ids) == TEXT
    assert (reloaded.pad_token_id, reloaded.eos_token_id, reloaded.padding_side) == (0, 2, "left")
    assert reloaded.decode([*ids, reloaded.eos_token_id], skip_special_tokens=True) == TEXT


def test_bad_alphabets_are_rejected():
    with pytest.raises(ValueError, match="repeats"):
        build_char_tokenizer("0123+1")
    with pytest.raises(ValueError, match="empty"):
        build_char_tokenizer("")
