"""What a stage start prints: one recipe line, the list with recipe.print=true (or at DEBUG), only the groups the
stage reads (autodata/stages.py), and every warning; recipe.json keeps the full record."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from autodata import provenance
from autodata.config import RootConfig, register_configs, to_typed
from autodata.stages import STAGES, reads, stage_config_names

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
register_configs()
# Values of groups a generate run does not read, beside one it does
FOREIGN = ["train.batch_size=4", "meta.iterations=3", "generate.max_rounds=3"]


def composed(overrides: list[str]) -> RootConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return to_typed(compose(config_name="config", overrides=overrides))


def recipe_records(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "autodata.recipe"]


def test_a_start_prints_one_line_that_counts_only_the_stages_groups(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="autodata.recipe")
    cfg = composed(["stage=generate", *FOREIGN])
    settings = provenance.record(cfg, tmp_path)
    (line,) = recipe_records(caplog)
    shown = [s for s in settings if not s.key.startswith(("train.", "meta."))]
    assert line.startswith(f"recipe: {len(shown)} values differ from the defaults (stage=generate, experiment=cpu)")
    assert str(tmp_path / "recipe.json") in line and "recipe.print=true" in line
    assert "\n" not in line
    # recipe.json keeps every value, marking those the stage does not read
    saved = {s["key"]: s for s in json.loads((tmp_path / "recipe.json").read_text())["settings"]}
    assert saved["train.batch_size"]["value"] == 4 and saved["train.batch_size"]["read_by_stage"] is False
    assert saved["meta.iterations"]["read_by_stage"] is False and saved["generate.max_rounds"]["read_by_stage"]


def test_recipe_print_lists_the_stages_groups_only(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="autodata.recipe")
    provenance.record(composed(["stage=generate", "recipe.print=true", *FOREIGN]), tmp_path)
    (listing,) = recipe_records(caplog)
    keys = re.findall(r"^  (\S+) += ", listing, re.M)
    assert "generate.max_rounds" in keys and "corpus.limit" in keys and "recipe.print" in keys
    assert not [k for k in keys if k.startswith(("train.", "meta.", "eval.", "report."))], keys


def test_debug_logging_lists_them_too(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="autodata.recipe")
    provenance.record(composed(["stage=train", "train.dataset=tests/fixtures/train_run", *FOREIGN]), tmp_path)
    head, listing = recipe_records(caplog)
    assert head.startswith("recipe: ") and "(stage=train" in head
    assert "train.batch_size" in listing and "generate.max_rounds" not in listing and "meta." not in listing


def test_warnings_are_printed_without_recipe_print(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="autodata.recipe")
    provenance.record(composed(["stage=generate", "models=openai", "models.base_url=http://h:1/v1", "models.model=m"]),
                  tmp_path)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("sized for the embedded model" in w for w in warned)


def test_every_stage_says_which_groups_it_reads():
    groups = {f.name for f in __import__("dataclasses").fields(RootConfig)}
    assert set(STAGES) == stage_config_names(CONF)
    for name, stage in STAGES.items():
        assert stage.reads is None or set(stage.reads) <= groups, name
    assert reads("generate", "models.default.max_tokens") and not reads("generate", "train.batch_size")
    assert reads("pipeline", "train.batch_size") and reads("report", "logger") and reads("eval", "experiment.name")


def test_a_real_start_prints_one_recipe_line(tmp_path):
    """Through the CLI, on the stage that calls no endpoint: one recipe line, none of another stage's values."""
    proc = subprocess.run([sys.executable, "-m", "autodata.run", "stage=plan", "plan.target=10", "train.batch_size=4",
                           "progress=false", f"hydra.run.dir={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    lines = [line for line in out.splitlines() if "autodata.recipe" in line]
    assert len(lines) == 1 and "recipe: " in lines[0] and "(stage=plan, experiment=cpu)" in lines[0], lines
    assert "train.batch_size" not in out
    saved = json.loads((tmp_path / "recipe.json").read_text())
    assert {s["key"] for s in saved["settings"]} >= {"train.batch_size", "plan.target"}
