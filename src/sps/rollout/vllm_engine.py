"""Rollouts with vLLM on a GPU, behind the same interface as HFEngine.

Only imported when asked for (`--engine vllm`); `import sps` never needs vLLM. Not exercised by the
test suite, which runs without a GPU: see docs/gpu.md for what was and was not checked.
"""

from __future__ import annotations

import os

from sps.rollout.base import Completion, SamplingParams


class VLLMEngine:
    """Samples with a colocated vLLM instance on the current GPU.

    Log-probs are vLLM's "processed" ones (after temperature and top-k/top-p), which equal the
    HF engine's whenever top_k = 0 and top_p = 1; vLLM's kernels differ slightly from the
    training forward pass, so with vLLM the trainer can recompute old log-probs
    (`recompute_old_logprobs`).
    """

    def __init__(self, model_path: str, tokenizer, gpu_memory_utilization: float = 0.4, dtype: str = "auto"):
        # The engine core must run in this process for load_weights to reach the model.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        try:
            from vllm import LLM
        except ImportError as e:
            raise ValueError("engine 'vllm' needs the vllm package (pip install vllm) on a GPU machine") from e
        self.tokenizer = tokenizer
        self.llm = LLM(
            model=model_path,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            enable_prefix_caching=True,
            logprobs_mode="processed_logprobs",
        )

    def generate(
        self, prompt_ids: list[list[int]], n: int, params: SamplingParams, seed: int | None = None
    ) -> list[list[Completion]]:
        from vllm import SamplingParams as VLLMSampling
        from vllm.inputs import TokensPrompt

        sampling = VLLMSampling(
            n=n,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k if params.top_k > 0 else -1,
            max_tokens=params.max_new_tokens,
            logprobs=0,  # the sampled token's log-prob only
            seed=seed,
        )
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids], sampling, use_tqdm=False)
        return [
            [
                Completion(
                    token_ids=list(c.token_ids),
                    text=c.text,
                    logprobs=[step[token].logprob for step, token in zip(c.logprobs, c.token_ids)],
                    finish_reason="stop" if c.finish_reason == "stop" else "length",
                )
                for c in out.outputs
            ]
            for out in outputs
        ]

    def load_weights(self, model) -> None:
        """Copy the training policy's weights into vLLM (single GPU, no tensor parallelism)."""
        runner = self.llm.llm_engine.model_executor.driver_worker.worker.model_runner
        runner.model.load_weights(model.state_dict().items())
        self.llm.reset_prefix_cache()
