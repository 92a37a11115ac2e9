"""Metric sinks besides the JSON Lines log, named in report_to: TensorBoard and Weights & Biases."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sps.training.config import TrainConfig


def open_writers(cfg: TrainConfig, run_dir: Path) -> list:
    """Extra metric sinks named in report_to; a missing package is an error that says so."""
    writers = []
    for name in cfg.report_to:
        if name == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ValueError("report_to tensorboard needs the tensorboard package (pip install tensorboard)") from e
            board = SummaryWriter(str(run_dir / "tensorboard"))

            def write(step, metrics, board=board):
                for k, v in metrics.items():
                    board.add_scalar(k, v, step)

            write.close = board.close
            writers.append(write)
        elif name == "wandb":
            try:
                import wandb
            except ImportError as e:
                raise ValueError("report_to wandb needs the wandb package (pip install wandb)") from e
            wandb_run = wandb.init(project="sps", dir=str(run_dir), config=dataclasses.asdict(cfg), id=run_dir.name, resume="allow")

            def write(step, metrics, wandb_run=wandb_run):
                wandb_run.log(metrics, step=step)

            write.close = wandb_run.finish
            writers.append(write)
    return writers
