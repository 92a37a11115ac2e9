"""Shared fixtures: tiny real models built locally (nothing is downloaded)."""

from __future__ import annotations

import os
from contextlib import contextmanager

# Tests never download: a hub lookup fails at once instead of retrying for half a minute. Set
# before huggingface_hub and datasets are imported, since both read it at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from sps.models.tokenizer import build_char_tokenizer  # noqa: E402
from sps.tasks.countdown import ALPHABET  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache_and_threads(tmp_path_factory):
    """Tests build into a fresh cache (never the user's), shared by the whole session, or by both
    stages of `make test` when it names one in SPS_TEST_CACHE (it empties that folder first)."""
    os.environ["SPS_CACHE_DIR"] = os.environ.get("SPS_TEST_CACHE") or str(tmp_path_factory.mktemp("sps_cache"))
    torch.set_num_threads(2)


@contextmanager
def one_thread():
    """torch on one thread inside, as in each process of a torchrun test: the same sums in the same order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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
