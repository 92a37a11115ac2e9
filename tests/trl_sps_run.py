"""SPS inside TRL on a tiny local model: built by test_trl.py in-process, and run by it under
`accelerate launch` (then every process saves what it ended with)."""

import sys

import torch

# A completion is correct when it contains this character: about a third of the random
# policy's 8-token completions are, so most groups have reward variance and demonstrations.
TARGET = "3"


def build_trainer(model_dir: str, output_dir: str, **overrides):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sps.integrations.trl import SPSGRPOConfig, SPSGRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    target_id = tokenizer.convert_tokens_to_ids(TARGET)

    def contains_target(completion_ids, **_):  # graded on token ids (exact with any tokenizer)
        return [float(target_id in ids) for ids in completion_ids]

    prompts = ["1 2>3:", "4 5>9:", "7 8>1:", "9 6>3:", "2 2>4:", "8 1>7:", "5 5>0:", "6 3>2:"]
    settings = dict(
        output_dir=output_dir, per_device_train_batch_size=16, num_generations=4, max_completion_length=8,
        max_steps=4, learning_rate=1e-2, beta=0.0, use_cpu=True, bf16=False, report_to="none",
        save_strategy="no", logging_steps=1, seed=0, sps_rl_steps=1, sps_irl_steps=1,
    )
    config = SPSGRPOConfig(**{**settings, **overrides})
    return SPSGRPOTrainer(
        model=model, reward_funcs=contains_target, args=config,
        train_dataset=Dataset.from_list([{"prompt": p} for p in prompts * 4]), processing_class=tokenizer,
    )


def main(model_dir: str, output_dir: str) -> None:
    torch.set_num_threads(1)
    trainer = build_trainer(model_dir, output_dir)
    trainer.train()
    rank = trainer.accelerator.process_index
    torch.save(
        {
            "world_size": trainer.accelerator.num_processes,
            "distributed_type": str(trainer.accelerator.distributed_type),
            "params": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
            "buffer": trainer.demo_buffer.state_dict(),
            "log": trainer.state.log_history,
        },
        f"{output_dir}/rank{rank}.pt",
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
