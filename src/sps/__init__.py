"""sps: RL post-training of LLM reasoners with Steering Probability Squeezing (SPS).

Importing `sps` is cheap on purpose: submodules load torch, transformers or math-verify only
when they are used, so grading workers and the command line start fast.
"""

__version__ = "0.1.0"
