"""stage=report: our numbers beside the paper's, a missing run says "missing" and never shows the paper's number."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from hydra import compose, initialize_config_dir

from autodata.config import register_configs, to_typed
from autodata.validation import validate
from eval.report import make_report

ROOT = Path(__file__).resolve().parents[1]
register_configs()


def write_eval_run(path: Path, sets: dict[str, dict]) -> None:
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps({"n": 3, "datasets": sets}))


def test_report_with_one_present_and_one_missing_run(tmp_path):
    present = tmp_path / "eval_base_cot"
    write_eval_run(present, {"cs_cot": {"mean_at_3": {"value": 0.65, "stderr": 0.02, "n": 100},
                                        "best_at_3": {"value": 0.7, "stderr": 0.03, "n": 100}}})
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = to_typed(compose(config_name="config", overrides=[
            "stage=report", "report=paper_cs",
            f"+report.runs={{base/cot_test: {present}, base/agentic_test: {tmp_path / 'never_ran'}}}"]))
    validate(cfg)
    out = tmp_path / "report"
    cells = make_report(cfg.report, out)

    by = {(c.row, c.column, c.metric): c for c in cells}
    assert len(cells) == 3 * 2 * 2
    ours = by[("base", "cot_test", "mean_at_3")]
    assert ours.ours == 0.65 and ours.paper == 0.630 and abs(ours.diff - 0.02) < 1e-9
    missing = by[("base", "agentic_test", "mean_at_3")]
    assert missing.ours is None and missing.paper == 0.366 and missing.diff is None
    assert "never_ran/metrics.json not found" in missing.source

    md = (out / "report.md").read_text()
    assert "| base | 0.650 ± 0.020 (paper 0.630, diff +0.020) | missing (paper 0.366, diff -) |" in md
    assert "| GRPO on Agentic data | missing (paper 0.774, diff -) | missing (paper 0.632, diff -) |" in md
    assert "## best_at_3" in md and "0.700 ± 0.030 (paper 0.758, diff -0.058)" in md

    with (out / "report.csv").open() as fh:
        table = {(r["row"], r["column"], r["metric"]): r for r in csv.DictReader(fh)}
    assert table[("base", "agentic_test", "mean_at_3")]["ours"] == "missing"
    assert table[("base", "agentic_test", "mean_at_3")]["paper"] == "0.366"
    assert abs(float(table[("base", "cot_test", "best_at_3")]["diff"]) + 0.058) < 1e-6


def test_a_multi_set_run_needs_the_set_named(tmp_path):
    run = tmp_path / "eval_both"
    est = {"value": 0.5, "stderr": 0.1, "n": 10}
    write_eval_run(run, {"cs_cot": {"mean_at_3": est}, "cs_agentic": {"mean_at_3": {**est, "value": 0.4}}})
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = to_typed(compose(config_name="config", overrides=[
            "stage=report", "report.metrics=[mean_at_3]",
            f"+report.runs={{base/cot_test: {run}, base/agentic_test: '{run}#cs_agentic'}}"]))
    cells = {c.column: c for c in make_report(cfg.report, tmp_path / "report")}
    assert cells["agentic_test"].ours == 0.4
    assert cells["cot_test"].ours is None and "name one as" in cells["cot_test"].source
