"""The rollout interface: what every generation engine takes and returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. `top_k=0` and `top_p=1.0` switch those filters off."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 512

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (got {self.temperature}); greedy decoding is not a sampling setting")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (got {self.top_p})")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (got {self.top_k})")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1 (got {self.max_new_tokens})")


@dataclass
class Completion:
    """One sampled completion.

    token_ids:     the sampled tokens, ending with EOS when finish_reason == "stop".
    text:          the decoded completion without special tokens.
    logprobs:      log pi(y_t | prompt, y_<t) of each sampled token under the temperature-scaled
                   policy (before top-p/top-k filtering), one per token id: the "old" log-probs
                   that the RL ratio is taken against.
    finish_reason: "stop" (EOS sampled) or "length" (max_new_tokens reached).
    entropies:     entropy of the temperature-scaled next-token distribution at each step, when
                   the engine can report it (the squeezing metrics use it); None otherwise.
    """

    token_ids: list[int]
    text: str
    logprobs: list[float]
    finish_reason: str
    entropies: list[float] | None = None


class RolloutEngine(Protocol):
    """Samples `n` completions for each prompt (given as token ids, template already applied)."""

    def generate(
        self, prompt_ids: list[list[int]], n: int, params: SamplingParams, seed: int | None = None
    ) -> list[list[Completion]]: ...
