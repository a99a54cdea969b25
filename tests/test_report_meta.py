"""stage=report's meta-optimization table: a meta_optimize run's summary.json beside the paper's CS result; a run
without one says "missing" and never shows the paper's numbers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from autodata.config import register_configs, to_typed
from autodata.meta.outputs import PAPER
from autodata.validation import ConfigError, validate
from eval.report import make_report
from eval.report import run as run_report

ROOT = Path(__file__).resolve().parents[1]
register_configs()

HEADER = "| run | score | baseline | best | gain | iterations | kept | rejected by guard | flagged |"
PAPER_ROW = "| paper | pass_rate | 0.621 | 0.796 | +0.175 | 233 | 126 (or 124) | - | - |"


def compose_report(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return to_typed(compose(config_name="config", overrides=["stage=report", "report.plots=false", *overrides]))


def write_meta_run(path: Path, **changes) -> Path:
    """A summary.json as autodata/meta/outputs.py writes it (20 iterations, 0.55 -> 0.70)."""
    path.mkdir(parents=True)
    summary = {"iterations": 20, "iterations_planned": 20, "iterations_failed": 0, "kept": 7,
               "rejected": {"guard": 4, "not_better": 8, "flagged": 1}, "rejected_by_guard": 4, "flagged": 2,
               "score_name": "pass_rate", "baseline_id": "v0000", "baseline_score": 0.55, "best_id": "v0012",
               "best_score": 0.70, "best_lineage": ["v0000", "v0003", "v0012"], "seconds": 812.4,
               "parent_rechecks": {"count": 0, "matched": 0, "model_calls": 0, "cached_calls": 0}, "paper": PAPER,
               **changes}
    (path / "summary.json").write_text(json.dumps(summary, indent=2))
    return path


def test_the_paper_cs_preset_carries_the_published_meta_numbers():
    cfg = compose_report("report=paper_cs")
    assert cfg.report.meta_paper == PAPER
    assert cfg.report.meta_runs == {}


def test_meta_table_with_our_run_a_missing_run_and_the_paper_row(tmp_path):
    ours = write_meta_run(tmp_path / "meta_cs")
    never = tmp_path / "meta_never"
    cfg = compose_report("report=paper_cs", f"+report.meta_runs={{ours: {ours}, again: {never}}}")
    validate(cfg)
    out = tmp_path / "report"
    cells = {(c.row, c.column): c for c in make_report(cfg.report, out) if c.metric == "meta_optimization"}

    # 7 measures for each of the two named runs; the paper has no cells of its own
    assert len(cells) == 14
    best = cells[("best_score", "ours")]
    assert best.ours == 0.70 and best.paper == 0.796 and abs(best.diff + 0.096) < 1e-9
    gain = cells[("gain", "ours")]
    assert abs(gain.ours - 0.15) < 1e-9 and abs(gain.paper - 0.175) < 1e-9
    assert cells[("iterations", "ours")].ours == 20 and cells[("iterations", "ours")].paper == 233
    assert cells[("rejected_by_guard", "ours")].ours == 4 and cells[("rejected_by_guard", "ours")].paper is None
    missing = cells[("best_score", "again")]
    assert missing.ours is None and missing.paper == 0.796 and missing.diff is None
    assert f"{never}/summary.json not found (run stage=meta_optimize with hydra.run.dir={never})" in missing.source

    md = (out / "report.md").read_text()
    table = md[md.index("## Meta-optimization"):]
    assert HEADER in table
    assert "| ours | pass_rate | 0.550 | 0.700 | +0.150 | 20 | 7 | 4 | 2 |" in table
    assert "| again | missing | missing | missing | missing | missing | missing | missing | missing |" in table
    assert PAPER_ROW in table
    # The paper's numbers appear once, in the paper row only: never in the missing run's place
    assert table.count("0.796") == 1 and table.count("| 233 |") == 1
    assert f"- again: {never}/summary.json not found" in table
    # The CS and data-quality tables are still there
    assert "## mean_at_3" in md and "## Data quality (generate runs)" in md

    with (out / "report.csv").open() as fh:
        rows = {(r["row"], r["column"]): r for r in csv.DictReader(fh) if r["metric"] == "meta_optimization"}
    assert rows[("best_score", "ours")]["ours"] == "0.700000" and rows[("best_score", "ours")]["paper"] == "0.796"
    assert rows[("best_score", "ours")]["diff"] == "-0.096000"
    assert rows[("kept", "ours")]["ours"] == "7.000000" and rows[("kept", "ours")]["paper"] == "126.0"
    assert rows[("kept", "again")]["ours"] == "missing" and rows[("kept", "again")]["paper"] == "126.0"


def test_a_mean_gap_run_says_its_scores_are_not_the_papers_pass_rates(tmp_path):
    gap = write_meta_run(tmp_path / "meta_gap", score_name="mean_gap", baseline_score=0.12, best_score=0.2)
    cfg = compose_report("report=paper_cs", f"+report.meta_runs={{gap: {gap}}}")
    cells = {(c.row, c.column): c for c in make_report(cfg.report, tmp_path / "report")
             if c.metric == "meta_optimization"}
    best = cells[("best_score", "gap")]
    assert best.ours == 0.2 and best.paper is None and best.diff is None
    assert "scores are mean_gap, the paper's are pass_rate: not compared" in best.source
    # Counts are still compared
    assert cells[("kept", "gap")].paper == 126
    md = (tmp_path / "report" / "report.md").read_text()
    assert ("| gap | mean_gap (not pass_rate: scores not comparable with the paper's) | 0.120 | 0.200 | +0.080 "
            "| 20 | 7 | 4 | 2 |") in md
    assert PAPER_ROW in md


def test_an_unfinished_run_and_a_summary_without_a_measure(tmp_path):
    unfinished = tmp_path / "meta_running"
    unfinished.mkdir()
    (unfinished / "history.jsonl").write_text("".join(json.dumps({"format": 1, "iteration": i}) + "\n"
                                                      for i in (1, 2, 3)))
    old = write_meta_run(tmp_path / "meta_old")
    summary = json.loads((old / "summary.json").read_text())
    del summary["flagged"]
    (old / "summary.json").write_text(json.dumps(summary))
    cfg = compose_report(f"+report.meta_runs={{running: {unfinished}, old: {old}}}")
    cells = {(c.row, c.column): c for c in make_report(cfg.report, tmp_path / "report")}
    assert "holds 3 iteration rows: the run has not finished" in cells[("kept", "running")].source
    flagged = cells[("flagged", "old")]
    assert flagged.ours is None and f"{old}/summary.json has no flagged" in flagged.source
    md = (tmp_path / "report" / "report.md").read_text()
    # Without report=paper_cs: no paper row, only the meta section
    assert "| paper |" not in md and "## mean_at_3" not in md
    assert "| old | pass_rate | 0.550 | 0.700 | +0.150 | 20 | 7 | 4 | missing |" in md


def test_no_meta_section_without_meta_runs_or_meta_paper(tmp_path):
    gen = tmp_path / "never_generated"
    cfg = compose_report(f"+report.generate_runs={{cot: {gen}}}")
    cells = make_report(cfg.report, tmp_path / "report")
    assert all(c.metric == "data_quality" for c in cells)
    assert "Meta-optimization" not in (tmp_path / "report" / "report.md").read_text()
    # report=paper_cs without a meta run: the paper row and how to add a run, no meta cells
    cfg = compose_report("report=paper_cs", f"+report.generate_runs={{cot: {gen}}}")
    cells = make_report(cfg.report, tmp_path / "report_cs")
    assert not [c for c in cells if c.metric == "meta_optimization"]
    md = (tmp_path / "report_cs" / "report.md").read_text()
    assert PAPER_ROW in md and "'+report.meta_runs={ours: runs/meta_cs}'" in md


def test_a_found_meta_run_makes_a_report_not_empty_and_a_missing_one_does_not(tmp_path):
    ours = write_meta_run(tmp_path / "meta_cs")
    # Every eval cell of report=paper_cs is missing, but the meta run was found: exit 0
    cfg = compose_report("report=paper_cs", f"+report.meta_runs={{ours: {ours}}}")
    run_report(cfg, tmp_path / "report")
    assert "| ours | pass_rate |" in (tmp_path / "report" / "report.md").read_text()
    cfg = compose_report(f"+report.meta_runs={{ours: {tmp_path / 'meta_never'}}}")
    with pytest.raises(SystemExit) as exit_info:
        run_report(cfg, tmp_path / "report_empty")
    assert exit_info.value.code == 2


def test_an_unknown_meta_paper_measure_is_a_config_error():
    cfg = compose_report("report=paper_cs", "+report.meta_paper.best=0.8")
    with pytest.raises(ConfigError, match=r"report.meta_paper.best .* is not a meta-optimization measure"):
        validate(cfg)


def test_report_meta_doctests():
    import doctest

    import eval.report_meta

    assert doctest.testmod(eval.report_meta).failed == 0
