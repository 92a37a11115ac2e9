"""Shared fixtures: tiny real models built locally (nothing is downloaded)."""

from __future__ import annotations

import pytest
import torch

from sps.models.testbed import TestbedConfig, build_testbed
from sps.models.tokenizer import build_char_tokenizer
from sps.tasks.countdown import ALPHABET

# A testbed small enough to build in seconds; it solves a few problems, which is all tests need.
TINY_TESTBED = TestbedConfig(hidden_size=64, intermediate_size=256, num_layers=2, num_heads=2, steps=150, batch_size=64, warmup_steps=20)


@pytest.fixture(autouse=True, scope="session")
def _cpu_threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def random_llama(tmp_path_factory):
    """A randomly initialised 2-layer Llama with the testbed's character tokenizer, saved to a folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = build_char_tokenizer(ALPHABET)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=128,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    folder = tmp_path_factory.mktemp("random_llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_testbed(tmp_path_factory):
    """A tiny testbed model trained for a few seconds (its folder)."""
    return build_testbed(TINY_TESTBED, tmp_path_factory.mktemp("tiny_testbed") / "model", show_progress=False)
