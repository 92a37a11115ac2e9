"""sps: RL post-training of LLM reasoners with Steering Probability Squeezing (SPS).

The Python API (docs/python.md):

    from sps import TrainConfig, train, evaluate

    run_dir = train(TrainConfig(model="smollm2-135m-instruct", train_data="my_problems.jsonl",
                                reward_funcs=[my_reward], peft=PeftConfig(r=16)))
    metrics = evaluate(run_dir, "my_test.jsonl", n=16, reward_funcs=[my_reward])

Importing `sps` is cheap on purpose: these names, and the submodules behind them, load torch,
transformers or math-verify only when they are used, so grading workers and the command line
start fast.
"""

__version__ = "0.1.0"

# name -> module that defines it, imported on first use (PEP 562).
_API = {
    "TrainConfig": "sps.training.config",
    "PeftConfig": "sps.training.config",
    "SPSConfig": "sps.training.config",
    "AdvantageConfig": "sps.training.config",
    "PolicyLossConfig": "sps.training.config",
    "train": "sps.training.trainer",
    "evaluate": "sps.evaluation.evaluate",
    "load_config": "sps.config",
}
__all__ = list(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'sps' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_API[name]), name)
