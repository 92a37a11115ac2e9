"""`torchrun --nproc_per_node 2 -m sps.cli train` with FSDP2 sharding: a SIGKILLed run resumes
without repeating or skipping a step, its evaluations are shared out and equal one process's, its
checkpoints and best policy load with `from_pretrained`, and FlowRL's log Z head trains,
checkpoints and resumes sharded."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import one_thread
from test_distributed import tied_copy

from sps.training.checkpoint import list_checkpoints

SETTINGS = dict(  # a random tied model earns no reward: the entropy bonus makes every step update it
    algorithm="grpo", train_data="countdown-train", train_size=16, prompts_per_step=4, num_generations=4,
    max_completion_length=12, learning_rate=1e-2, entropy_coef=0.01, max_steps=4, save_every=2, keep_checkpoints=2,
    eval_every=4, eval_limit=4, eval_n=2, probe_problems=2, threads=1, parallelism="fsdp", keep_best=True,
    generation_batch_size=2,  # an evaluation of 4 problems x 2 samples is 4 batches, 2 for each process
)
TIMEOUT = 300  # seconds: a collective that one process never joins hangs the run instead of failing it


def rows(run_dir: Path) -> list[dict]:
    file = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in file.read_text().splitlines()] if file.exists() else []


def samples(folder: Path) -> list[tuple]:
    rows = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    return sorted((r["problem_id"], r["sample_index"], r["completion"], r["correct"]) for r in rows)


def evaluate_alone(model: Path, like: Path, out: Path) -> Path:
    """The evaluation in `like` (its settings.json) made again by this one process."""
    from sps.evaluation.evaluate import evaluate

    settings = json.loads((like / "settings.json").read_text())
    sampling = {key: settings[key] for key in ("n", "temperature", "top_p", "max_new_tokens", "limit", "prompt_template", "seed")}
    with one_thread():
        evaluate(model, "countdown-val", out, **sampling, batch_size=SETTINGS["generation_batch_size"])
    return out


def command(config_file: Path, port: int) -> list[str]:
    launcher = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    return [launcher, "--nproc_per_node", "2", "--master_port", str(port), "-m", "sps.cli", "train", "--config", str(config_file)]


def config(tmp_path: Path, name: str, model: Path, **changes) -> Path:
    file = tmp_path / f"{name}.yaml"
    file.write_text(yaml.safe_dump({**SETTINGS, "model": str(model), "output_dir": str(tmp_path / name), **changes}))
    return file


@pytest.mark.slow
@pytest.mark.multiprocess
def test_killed_sharded_run_resumes_exactly_and_saves_loadable_checkpoints(random_llama, tmp_path):
    from transformers import AutoModelForCausalLM

    model = tied_copy(random_llama, tmp_path / "tied")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command(config(tmp_path, "whole", model), 29531), check=True, env=env, capture_output=True, timeout=TIMEOUT)
    whole = rows(tmp_path / "whole")
    assert [r["step"] for r in whole] == [1, 2, 3, 4]
    assert all(r["grad_norm"] > 0 for r in whole)
    assert (tmp_path / "whole" / "evals" / "step_000004" / "metrics.json").is_file()  # evaluated while sharded
    # Each process sampled its share of the start model's evaluation: together, one process's samples.
    step0 = tmp_path / "whole" / "evals" / "step_000000"
    assert samples(step0) == samples(evaluate_alone(model, step0, tmp_path / "alone"))

    # Kill every process (as a lost node would) once step 3 is logged: step 4 is under way and
    # the newest checkpoint is step 2.
    killed = config(tmp_path, "killed", model)
    process = subprocess.Popen(command(killed, 29532), env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(rows(tmp_path / "killed")) < 3:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert [step for step, _ in list_checkpoints(tmp_path / "killed")][-1] in (2, 4)
    subprocess.run(command(killed, 29533), check=True, env=env, capture_output=True, timeout=TIMEOUT)
    resumed = rows(tmp_path / "killed")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(whole, resumed):
        for key, value in a.items():
            if isinstance(value, float) and not key.startswith(("time/", "tokens_per_second/")):
                assert b[key] == pytest.approx(value, rel=1e-6, abs=1e-9, nan_ok=True), (a["step"], key)

    # The checkpoints are plain Hugging Face folders: the same weights, the tie intact.
    loaded = [AutoModelForCausalLM.from_pretrained(tmp_path / run / "checkpoints" / "step_000004") for run in ("whole", "killed")]
    start = AutoModelForCausalLM.from_pretrained(model).state_dict()
    for name, weight in loaded[0].state_dict().items():
        assert torch.equal(weight, loaded[1].state_dict()[name]), name
    assert max(float((loaded[0].state_dict()[k] - start[k]).abs().max()) for k in start) > 1e-3
    assert torch.equal(loaded[0].lm_head.weight, loaded[0].model.embed_tokens.weight)
    # keep_best gathers the sharded weights on every process: no reward, so the start model stays the best.
    for run in ("whole", "killed"):
        assert json.loads((tmp_path / run / "best" / "best.json").read_text())["step"] == 0
        best = AutoModelForCausalLM.from_pretrained(tmp_path / run / "best").state_dict()
        assert all(torch.equal(best[k], start[k]) for k in start)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_flowrl_trains_sharded_and_resumes_exactly(random_llama, tmp_path):
    """FlowRL's log Z head is a submodule of the policy that the trainer calls outside the model's
    forward: FSDP2 shards it with the root, and it goes to and comes back from log_z_head.pt."""
    from safetensors.torch import load_file

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    flowrl = dict(loss_mode="flowrl", loss_type="grpo", eval_every=-1, probe_problems=0, keep_best=False)
    subprocess.run(command(config(tmp_path, "whole", random_llama, **flowrl), 29534), check=True, env=env,
                   capture_output=True, timeout=TIMEOUT)
    whole = rows(tmp_path / "whole")
    assert [r["step"] for r in whole] == [1, 2, 3, 4]
    assert all(r["nonfinite_updates"] == 0 for r in whole) and len({r["flowrl/log_z"] for r in whole}) == 4  # the head trains
    last = tmp_path / "whole" / "checkpoints" / "step_000004"
    assert set(torch.load(last / "log_z_head.pt", weights_only=True)) >= {"net.0.weight", "net.8.bias"}
    assert not [name for name in load_file(last / "model.safetensors") if "log_z" in name]
    # The run as a crash after step 4 that lost its last checkpoint would leave it: it resumes from step 2.
    shutil.copytree(tmp_path / "whole", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "step_000004")
    resumed_config = config(tmp_path, "resumed", random_llama, **flowrl)
    subprocess.run(command(resumed_config, 29535), check=True, env=env, capture_output=True, timeout=TIMEOUT)
    resumed = rows(tmp_path / "resumed")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    for key in ("loss", "flowrl/log_z", "flowrl/residual", "grad_norm"):
        assert [r[key] for r in resumed] == pytest.approx([r[key] for r in whole], rel=1e-6), key
