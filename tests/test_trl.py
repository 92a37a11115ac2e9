"""SPS inside TRL's GRPOTrainer (sps.integrations.trl): the IRL steps take sps's own IRL loss on
the buffered distinct correct completions, on 1 process and under 2-process DDP."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")
from transformers import AutoModelForCausalLM, TrainerCallback  # noqa: E402

from sps.training.batch import policy_logprobs  # noqa: E402
from sps.training.config import TrainConfig  # noqa: E402
from sps.training.distributed import World  # noqa: E402
from sps.training.optimize import optimize  # noqa: E402
from sps.training.sps_phase import build_demos  # noqa: E402
from sps.training.trainer import irl_part  # noqa: E402

SCRIPT = Path(__file__).with_name("trl_sps_run.py")
sys.path.insert(0, str(SCRIPT.parent))
from trl_sps_run import build_trainer  # noqa: E402


def step_demos(trainer, model):
    """sps's demonstrations (with weights) for the prompts of the trainer's latest batch."""
    from sps.integrations.trl import ids_key

    prompts = trainer.batch_prompts
    with torch.no_grad():
        return build_demos(
            trainer.sps, prompts, [ids_key(p) for p in prompts], [[]] * len(prompts), [[]] * len(prompts),
            trainer.demo_buffer, trainer.generation_batches,
            lambda rows: policy_logprobs(model, rows, trainer.args.temperature)[0], trainer.processing_class.pad_token_id,
        )


def demo_likelihood(model, demos) -> float:
    """The weighted mean token log-likelihood of the demonstrations (what an IRL step raises)."""
    with torch.no_grad():
        logps = policy_logprobs(model, demos.batch, 1.0)[0]
    mask = demos.batch.completion_mask
    return float((demos.weight * (logps * mask).sum(-1) / mask.sum(-1)).sum())


def test_trl_trainer_takes_sps_irl_steps(random_llama, tmp_path):
    before_last = {}

    class Snapshot(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **_):
            if state.global_step == args.max_steps - 1:  # a state dict: TRL's model has a patched forward
                before_last["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    trainer = build_trainer(str(random_llama), str(tmp_path))
    trainer.add_callback(Snapshot())
    trainer.train()
    log = {entry["step"]: entry for entry in trainer.state.log_history if "loss" in entry}
    # cycle with rl_steps = irl_steps = 1: steps 2 and 4 are IRL steps on buffered demonstrations.
    assert [step for step, entry in log.items() if "irl/demos" in entry] == [2, 4]
    assert all("clip_ratio/region_mean" in log[step] for step in (1, 3))
    assert trainer.generation_batches == 4 and trainer.demo_buffer.entries

    # The last (IRL) step raised the likelihood of its demonstrations.
    model = trainer.model
    before = AutoModelForCausalLM.from_pretrained(random_llama, dtype=torch.float32)
    before.load_state_dict(before_last["state"])
    demos = step_demos(trainer, before)
    assert demo_likelihood(model, demos) > demo_likelihood(before, demos) + 1e-3

    # Its loss and gradient equal sps's own IRL update on the same demonstrations (sps's optimize():
    # micro-batches sorted by length, padding cut; one SGD step at lr 1 moves the parameters by -gradient).
    demos = step_demos(trainer, model)
    assert len(demos.batch.texts) > demos.num_prompts["pull"] > 1 and demos.weight.std() > 0  # weights matter
    model.zero_grad()
    loss, _ = trainer.irl_loss(model, trainer.batch_prompts, demos.num_prompts["pull"])
    loss.backward()
    ours = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    cfg = TrainConfig(sps=trainer.sps, temperature=1.0, max_grad_norm=0.0)
    stats = optimize(model, torch.optim.SGD(model.parameters(), lr=1.0), World(), [irl_part(cfg, World(), demos, 1.0)], cfg, 1, 1, 0)
    assert abs(stats["loss"] - float(loss)) < 1e-6
    for name, p in model.named_parameters():
        assert torch.allclose(start[name] - p.detach(), ours[name], rtol=0, atol=1e-6), name
    assert max(g.abs().max() for g in ours.values()) > 1e-3  # a real gradient, not zeros


@pytest.mark.slow
@pytest.mark.multiprocess
def test_trl_trainer_on_two_processes(random_llama, tmp_path):
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    # --multi_gpu: without it accelerate silently starts one process on a machine without GPUs.
    subprocess.run(
        [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", "29531",
         str(SCRIPT), str(random_llama), str(tmp_path)],
        check=True, env=env,
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["distributed_type"] == "DistributedType.MULTI_CPU"
    assert ranks[0]["buffer"] == ranks[1]["buffer"] and ranks[0]["buffer"]["entries"]
    irl_steps = [e["step"] for e in ranks[0]["log"] if "irl/demos" in e]
    assert irl_steps == [2, 4]
    for name, value in ranks[0]["params"].items():
        assert torch.equal(value, ranks[1]["params"][name]), name


def test_an_untested_trl_version_is_refused_by_name(monkeypatch):
    import importlib

    import trl

    monkeypatch.setattr(trl, "__version__", "0.9.0")
    monkeypatch.delitem(sys.modules, "sps.integrations.trl", raising=False)
    with pytest.raises(ImportError, match=r"tested with trl 1\.16\.0; found trl 0\.9\.0"):
        importlib.import_module("sps.integrations.trl")
    monkeypatch.undo()
    importlib.import_module("sps.integrations.trl")  # the supported version imports
