"""Configs from YAML plus --key value overrides, with errors that name the key."""

import pytest

from sps.config import load_config
from sps.training.config import TrainConfig


def test_yaml_and_overrides_merge_with_types(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: testbed\nlearning_rate: 3.0e-4\nsps:\n  irl_steps: 2\n")
    cfg = load_config(TrainConfig, path, ["--learning_rate", "1e-4", "--sps.reshape_strength", "2", "--report_to", "tensorboard"])
    assert cfg.model == "testbed"
    assert cfg.learning_rate == 1e-4
    assert cfg.sps.irl_steps == 2 and cfg.sps.reshape_strength == 2.0
    assert cfg.report_to == ["tensorboard"]
    assert load_config(TrainConfig, None, ["--mask_truncated_completions=true"]).mask_truncated_completions is True


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["--lerning_rate", "1e-4"], "unknown config key 'lerning_rate'"),
        (["--sps.irl_stepz", "1"], "unknown config key 'sps.irl_stepz'"),
        (["--max_steps", "ten"], "'max_steps' must be an integer"),
        (["--max_steps", "1.5"], "'max_steps' must be an integer"),
        (["--mask_truncated_completions", "maybe"], "must be true or false"),
        (["--max_steps"], "has no value"),
    ],
)
def test_bad_settings_name_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(TrainConfig, None, overrides)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(TrainConfig, tmp_path / "nope.yaml")


def test_shipped_configs_load():
    from pathlib import Path

    for path in sorted(Path(__file__).parents[1].glob("configs/**/*.yaml")):
        load_config(TrainConfig, path)


def test_the_options_page_is_generated_from_the_current_configs():
    from pathlib import Path

    from sps.options import options_markdown

    page = Path(__file__).resolve().parents[1] / "docs" / "options.md"
    assert page.read_text() == options_markdown(), "docs/options.md is stale: python -m sps.options > docs/options.md"
