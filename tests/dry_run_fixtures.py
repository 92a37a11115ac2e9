"""Local stand-ins for the hub in dry-run tests: Qwen2.5-Math-shaped configs with a small tokenizer,
and a data folder with the shipped benchmarks plus made-up OpenR1-Math and GPQA rows of the same schema."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sps.preflight import KNOWN_SHAPES

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def small_tokenizer(texts: list[str]):
    """A byte-level BPE tokenizer with Qwen's special tokens, trained in seconds on `texts` (math
    problems, so that its tokens per problem come near a real tokenizer's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=8000, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE)


def qwen_folder(root: Path, hub_id: str, tokenizer) -> Path:
    """A folder with a Qwen2-shaped config.json (no weights) and the given tokenizer."""
    from transformers import Qwen2Config

    folder = root / hub_id.split("/")[1]
    folder.mkdir(parents=True, exist_ok=True)
    Qwen2Config(rope_theta=10000.0, **KNOWN_SHAPES[hub_id]).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def openr1_row(i: int) -> dict:
    return {"problem": f"Find x if {i}x + 2 = {3 * i + 2}.", "solution": "...", "answer": "3", "problem_type": "Algebra",
            "question_type": "math-word-problem", "source": "olympiads", "uuid": f"u{i:05d}"}


def gpqa_row(i: int) -> dict:
    return {"Record ID": f"rec{i}", "Question": f"Which is {i} + 1?", "Correct Answer": str(i + 1),
            "Incorrect Answer 1": str(i + 2), "Incorrect Answer 2": str(i + 3), "Incorrect Answer 3": str(i + 4)}


def data_folder(root: Path, shared: Path, openr1_rows: int = 200) -> Path:
    """The shipped benchmark files plus openr1_math.jsonl and gpqa_diamond.jsonl made up here."""
    folder = root / "data"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("math500", "aime24", "aime25", "brumo25", "hmmt_feb25", "hmmt_nov25", "gsm8k_train", "gsm8k_test"):
        shutil.copy(shared / f"{name}.jsonl", folder)
    (folder / "openr1_math.jsonl").write_text("".join(json.dumps(openr1_row(i)) + "\n" for i in range(openr1_rows)))
    (folder / "gpqa_diamond.jsonl").write_text("".join(json.dumps(gpqa_row(i)) + "\n" for i in range(20)))
    return folder
