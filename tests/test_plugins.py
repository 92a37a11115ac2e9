"""A user's own method in one file, from the command line (sps.plugins): examples/my_method.py
registers an advantage estimator and a policy loss that nothing under src/ names."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_reliability import config_file, error_of, settings
from test_train import rows

from sps.cli import main

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "my_method.py"
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(autouse=True)
def registries_as_shipped():
    """What a plugin registers in this process is taken out again, so the other tests see the shipped methods."""
    import sys

    from sps.algorithms.advantages import ADVANTAGE_ESTIMATORS
    from sps.algorithms.policy_losses import POLICY_LOSSES

    saved = [(table, dict(table)) for table in (ADVANTAGE_ESTIMATORS, POLICY_LOSSES)]
    yield
    for table, before in saved:
        table.clear()
        table.update(before)
    for name in [name for name in sys.modules if name.startswith("sps_plugin_")]:
        del sys.modules[name]


def test_a_plugin_s_methods_train_from_the_command_line_and_show_in_help(random_llama, tmp_path, capsys):
    assert not [p for p in SRC.rglob("*.py") if "sign_baseline" in p.read_text() or "entropy_weighted" in p.read_text()]
    run_dir = tmp_path / "run"
    config = config_file(tmp_path, "c", **settings(random_llama, run_dir, max_steps=2))
    assert main(["train", "--config", str(config), "--advantage_estimator", "sign_baseline"]) == 2  # not without the plugin
    assert "advantage_estimator must be one of" in error_of(capsys) and not run_dir.exists()
    assert main(["train", "--config", str(config), "--plugins", str(EXAMPLE), "--advantage_estimator", "sign_baseline",
                 "--loss_mode", "entropy_weighted"]) == 0
    assert [r["step"] for r in rows(run_dir)] == [1, 2]
    with pytest.raises(SystemExit):
        main(["train", "--plugins", str(EXAMPLE), "--help"])
    listing = capsys.readouterr().out
    assert "sign_baseline" in listing and "entropy_weighted" in listing
    assert main(["train", "--config", str(config), "--plugins", str(EXAMPLE), "--advantage_estimator", "sign_baseline",
                 "--loss_mode", "entropy_weighted", "--dry-run"]) == 0


def test_a_plugin_that_fails_to_import_is_one_line_and_writes_nothing(random_llama, tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("1 / 0\n")
    run_dir = tmp_path / "run"
    config = config_file(tmp_path, "c", **settings(random_llama, run_dir, plugins=[str(broken)]))
    assert main(["train", "--config", str(config)]) == 2
    assert error_of(capsys) == f"sps train: error: plugin {broken}: importing it raised ZeroDivisionError: division by zero"
    assert not run_dir.exists()
    assert main(["eval", "--model", str(random_llama), "--benchmark", "countdown-val", "--plugins", str(tmp_path / "none.py")]) == 2
    assert error_of(capsys) == f"sps: error: plugin {tmp_path / 'none.py'}: the file does not exist"


def test_a_run_is_not_resumed_after_its_plugin_changed(random_llama, tmp_path, capsys):
    plugin = tmp_path / "mine.py"
    plugin.write_text(EXAMPLE.read_text().replace('"sign_baseline"', '"sign_baseline_copy"').replace('"entropy_weighted"', '"entropy_weighted_copy"'))
    run_dir = tmp_path / "run"
    config = config_file(tmp_path, "c", **settings(random_llama, run_dir, max_steps=1, plugins=[str(plugin)], advantage_estimator="sign_baseline_copy"))
    assert main(["train", "--config", str(config)]) == 0
    plugin.write_text(plugin.read_text() + "\n# changed\n")
    assert main(["train", "--config", str(config)]) == 2
    assert f"{run_dir}: the plugin {plugin} changed since the run began" in error_of(capsys)
