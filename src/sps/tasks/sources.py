"""Where each named benchmark and training set comes from: one table.

A name resolves to the local JSON Lines file in the data folder when that file exists (the files
in ../shared/data follow the common schema `id`, `problem`, `answer`; see its README), otherwise
to its public copy on the Hugging Face hub, read with `datasets.load_dataset` (cached there).
A row format turns a source's own columns into `id`, `problem`, `answer` where they differ in
more than their names (GSM8K's "#### answer", GPQA's four answer columns).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldNames:
    """Which row fields hold the id, the problem statement and the gold answer."""

    id: str = "id"
    problem: str = "problem"
    answer: str = "answer"


@dataclass(frozen=True)
class Source:
    """A named data set: its file in the data folder and its hub copy (None: local file only)."""

    file: str
    hub: str | None = None  # owner/name on the Hugging Face hub
    config: str | None = None  # the hub dataset's configuration (subset)
    split: str = "test"
    fields: FieldNames = field(default_factory=FieldNames)  # the hub copy's column names
    license: str = ""
    row_format: str = "plain"  # a ROW_FORMATS key, applied to local and hub rows alike
    grader: str = "math"
    how_to_get: str = ""  # said when neither copy can be read


MATHARENA = "CC BY-NC-SA 4.0 (MathArena); problems (c) the competition's organisers"
GPQA_TERMS = (
    "GPQA is gated on the hub: accept its terms at https://huggingface.co/datasets/Idavidrein/gpqa and log in "
    "(`hf auth login` or HF_TOKEN), or put its rows (columns Question, Correct Answer, Incorrect Answer 1-3) "
    "into gpqa_diamond.jsonl in the data folder, or pass that file's path as the benchmark"
)

SOURCES: dict[str, Source] = {
    # The paper's evaluation sets.
    "math500": Source("math500.jsonl", "HuggingFaceH4/MATH-500", split="test", fields=FieldNames("unique_id"), license="MIT"),
    "aime24": Source("aime24.jsonl", "HuggingFaceH4/aime_2024", split="train", license="problems (c) MAA; AoPS solutions"),
    "aime25": Source("aime25.jsonl", "MathArena/aime_2025", split="train", fields=FieldNames("problem_idx"), license=MATHARENA),
    "hmmt_feb25": Source("hmmt_feb25.jsonl", "MathArena/hmmt_feb_2025", split="train", fields=FieldNames("problem_idx"), license=MATHARENA),
    "hmmt_nov25": Source("hmmt_nov25.jsonl", "MathArena/hmmt_nov_2025", split="train", fields=FieldNames("problem_idx"), license=MATHARENA),
    "brumo25": Source("brumo25.jsonl", "MathArena/brumo_2025", split="train", fields=FieldNames("problem_idx"), license=MATHARENA),
    "gpqa_diamond": Source(
        "gpqa_diamond.jsonl", "Idavidrein/gpqa", config="gpqa_diamond", split="train", fields=FieldNames(),
        license="CC BY 4.0; its terms ask not to reveal examples in plain text online",
        row_format="gpqa", grader="choice", how_to_get=GPQA_TERMS,
    ),
    # Other evaluation sets.
    "cmimc25": Source("cmimc25.jsonl", "MathArena/cmimc_2025", split="train", fields=FieldNames("problem_idx"), license=MATHARENA),
    "amc23": Source("amc23.jsonl", license="problems (c) MAA"),
    "minerva_math": Source("minerva_math.jsonl", license="MIT OCW material, CC BY-NC-SA 4.0"),
    "olympiadbench": Source("olympiadbench.jsonl", license="Apache-2.0 (Hothan/OlympiadBench)"),
    "gsm8k": Source("gsm8k_test.jsonl", "openai/gsm8k", config="main", split="test", fields=FieldNames("", "question"), license="MIT", row_format="gsm8k"),
    # Training sets.
    "openr1_math": Source(
        "openr1_math.jsonl", "open-r1/OpenR1-Math-220k", config="default", split="train", fields=FieldNames("uuid"),
        license="Apache-2.0",
        how_to_get="A local copy needs at least the columns problem and answer (it may keep the hub's others).",
    ),
    "gsm8k_train": Source("gsm8k_train.jsonl", "openai/gsm8k", config="main", split="train", fields=FieldNames("", "question"), license="MIT", row_format="gsm8k"),
    "math_train": Source("math_train.jsonl", license="MIT (MATH)"),
    "math_test_extra4500": Source("math_test_extra4500.jsonl", license="MIT (MATH)"),
}


def gsm8k_row(row: dict) -> dict:
    """GSM8K's answer column is the worked solution ending in '#### 1,080': keep '1080'."""
    solution = row.get("answer")
    if isinstance(solution, str) and "####" in solution:
        return {**row, "solution": solution, "answer": solution.rsplit("####", 1)[1].strip().replace(",", "")}
    return row


GPQA_CHOICES = ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
LETTERS = "ABCD"


def gpqa_row(row: dict) -> dict:
    """A GPQA row (Question, Correct Answer, Incorrect Answer 1-3) as a lettered multiple-choice
    problem whose answer is the correct letter. The order of the choices is shuffled with a seed
    drawn from the question text, so each problem has one fixed order on every machine."""
    question = row.get("Question")
    choices = [row.get(c) for c in GPQA_CHOICES]
    if not isinstance(question, str) or not all(isinstance(c, str) and c.strip() for c in choices):
        return row  # left for rows_to_problems to report as missing fields
    order = list(range(4))
    random.Random(hashlib.sha256(question.strip().encode()).hexdigest()).shuffle(order)
    lines = [f"({LETTERS[i]}) {choices[k].strip()}" for i, k in enumerate(order)]
    problem = question.strip() + "\n\n" + "\n".join(lines) + "\n\nAnswer with the letter of the correct choice."
    answer = LETTERS[order.index(0)]
    out = {"problem": problem, "answer": answer}
    if row.get("Record ID"):
        out["id"] = row["Record ID"]
    return out


ROW_FORMATS: dict[str, Callable[[dict], dict]] = {"plain": lambda row: row, "gsm8k": gsm8k_row, "gpqa": gpqa_row}
# A row format recognised from the columns of a file or hub set given by path or id.
FORMAT_COLUMNS = {"gpqa": {"Question", *GPQA_CHOICES}}
FORMAT_GRADERS = {"gpqa": "choice"}


def detect_format(row: object) -> str:
    """The row format whose columns `row` has, else 'plain'."""
    if isinstance(row, dict):
        for name, columns in FORMAT_COLUMNS.items():
            if columns <= row.keys():
                return name
    return "plain"
