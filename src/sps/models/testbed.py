"""The built-in testbed model: a small Llama trained from scratch on Countdown solutions.

Supervised training sees, for each sampled training problem, one of *all* its correct solutions
chosen uniformly, so the model learns to spread its probability over many ways of solving a
problem: an imperfect, diverse base model whose diversity RL can squeeze. The result is a normal
Hugging Face folder (safetensors, tokenizer, `testbed.json` with how it was built) that
training, evaluation and analysis load like any other model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from sps.config import option, section
from sps.io import atomic_dir
from sps.paths import cache_dir
from sps.progress import progress_bar
from sps.tasks.countdown import ALPHABET, CountdownConfig, build_splits
from sps.tasks.problem import Problem


@dataclass(frozen=True)
class TestbedConfig:
    """How the testbed model is built. The defaults are the measured ones in docs/testbed.md."""

    task: CountdownConfig = section(CountdownConfig, "the Countdown task the model learns")
    hidden_size: int = option(128, "model width")
    intermediate_size: int = option(512, "MLP width")
    num_layers: int = option(4, "transformer layers")
    num_heads: int = option(4, "attention heads")
    steps: int = option(650, "supervised training steps")
    batch_size: int = option(128, "solutions per step")
    learning_rate: float = option(2e-3, "peak AdamW learning rate")
    min_learning_rate: float = option(2e-4, "learning rate at the end of the cosine decay")
    warmup_steps: int = option(50, "linear warm-up steps")
    seed: int = option(0, "seed for initialisation and the order of training examples")

    def key(self) -> str:
        """A short digest of every setting: the cache folder name."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def default_testbed_dir(cfg: TestbedConfig) -> Path:
    return cache_dir() / "testbed" / f"countdown-{cfg.key()}"


def testbed_model_config(cfg: TestbedConfig, tokenizer):
    """The testbed's LlamaConfig (also what a dry run sizes before the model is built)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def build_testbed(cfg: TestbedConfig, out: str | Path | None = None, show_progress: bool = True) -> Path:
    """Build the testbed model into `out` (default: the cache) and return the folder.

    A folder that already holds a complete build with the same settings is reused as it is."""
    out = Path(out) if out else default_testbed_dir(cfg)
    info_file = out / "testbed.json"
    if info_file.is_file():
        if json.loads(info_file.read_text()).get("config") == dataclasses.asdict(cfg):
            return out
        raise ValueError(f"{out} holds a testbed built with other settings; choose another --out or delete it")

    from transformers import LlamaForCausalLM

    from sps.models.tokenizer import build_char_tokenizer

    start = time.monotonic()
    torch.manual_seed(cfg.seed)
    tokenizer = build_char_tokenizer(ALPHABET)
    model = LlamaForCausalLM(testbed_model_config(cfg, tokenizer))
    train = build_splits(cfg.task)["train"]
    losses = supervised_training(model, tokenizer, train, cfg, show_progress)
    info = {
        "config": dataclasses.asdict(cfg),
        "parameters": sum(p.numel() for p in model.parameters()),
        "build_seconds": round(time.monotonic() - start, 1),
        "final_loss": losses[-1],
    }
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "testbed.json").write_text(json.dumps(info, indent=2) + "\n")
    return out


def learning_rate(step: int, cfg: TestbedConfig) -> float:
    """Linear warm-up, then cosine decay from learning_rate to min_learning_rate."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_learning_rate + 0.5 * (cfg.learning_rate - cfg.min_learning_rate) * (1 + math.cos(math.pi * progress))


def supervised_training(model, tokenizer, problems: list[Problem], cfg: TestbedConfig, show_progress: bool) -> list[float]:
    """Next-token training on (prompt, uniformly chosen solution, EOS); loss on the completion only.

    Returns the loss of every step."""
    rng = random.Random(cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, betas=(0.9, 0.95), weight_decay=0.01)
    model.train()
    losses = []
    with progress_bar("testbed: supervised training", total=cfg.steps, enabled=show_progress, unit="steps") as advance:
        for step in range(cfg.steps):
            batch = [rng.choice(problems) for _ in range(cfg.batch_size)]
            input_ids, labels = encode_examples(tokenizer, [(p.problem, rng.choice(p.meta["solutions"])) for p in batch])
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, cfg)
            loss = model(input_ids=input_ids, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            advance(1)
    model.eval()
    return losses


def encode_examples(tokenizer, pairs: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt, completion) pairs -> input ids (B, L) and labels (B, L) that score only the
    completion and its EOS (-100 elsewhere). Prompts share one width, so only completions pad."""
    rows = [(tokenizer.encode(p), tokenizer.encode(c) + [tokenizer.eos_token_id]) for p, c in pairs]
    width = max(len(p) + len(c) for p, c in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (p, c) in enumerate(rows):
        input_ids[i, : len(p) + len(c)] = torch.tensor(p + c)
        labels[i, len(p) : len(p) + len(c)] = torch.tensor(c)
    return input_ids, labels
