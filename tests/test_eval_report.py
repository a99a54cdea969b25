"""stage=report: our numbers beside the paper's, a missing run says "missing" and never shows the paper's number."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from autodata.config import register_configs, to_typed
from autodata.validation import ConfigError, validate
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
    cells = [c for c in make_report(cfg.report, out) if c.metric != "data_quality"]

    by = {(c.row, c.column, c.metric): c for c in cells}
    assert len(cells) == 3 * 2 * 2
    ours = by[("base", "cot_test", "mean_at_3")]
    assert ours.ours == 0.65 and ours.paper == 0.630 and abs(ours.diff - 0.02) < 1e-9
    missing = by[("base", "agentic_test", "mean_at_3")]
    assert missing.ours is None and missing.paper == 0.366 and missing.diff is None
    assert "never_ran/metrics.json not found" in missing.source

    md = (out / "report.md").read_text()
    assert "| base | 0.650 ± 0.020 (n=100) (paper 0.630, diff +0.020) | missing (paper 0.366, diff -) |" in md
    assert "| GRPO on Agentic data | missing (paper 0.774, diff -) | missing (paper 0.632, diff -) |" in md
    assert "## best_at_3" in md and "0.700 ± 0.030 (n=100) (paper 0.758, diff -0.058)" in md

    with (out / "report.csv").open() as fh:
        table = {(r["row"], r["column"], r["metric"]): r for r in csv.DictReader(fh)}
    assert table[("base", "agentic_test", "mean_at_3")]["ours"] == "missing"
    assert table[("base", "cot_test", "mean_at_3")]["n"] == "100"
    assert table[("base", "agentic_test", "mean_at_3")]["n"] == ""
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


def write_generate_run(path: Path, accepted: list[dict], reasons: dict[str, int]) -> None:
    """``reasons``: the failures of the rounds before acceptance, as stats.json counts and shares them."""
    path.mkdir(parents=True)
    (path / "accepted.jsonl").write_text("".join(json.dumps(r) + "\n" for r in accepted))
    total = sum(reasons.values())
    # failure_reasons (every rejected round, here with an exhausted document's) is not what the table reads
    (path / "stats.json").write_text(json.dumps({
        "failure_reasons": {**reasons, "too_easy": reasons.get("too_easy", 0) + 40},
        "rounds_before_acceptance": total, "failure_reasons_before_acceptance": reasons,
        "failure_reason_shares": {k: v / total for k, v in reasons.items()}}))


def compose_report(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return to_typed(compose(config_name="config", overrides=["stage=report", *overrides]))


def test_data_quality_table_beside_the_papers_numbers(tmp_path):
    agentic = tmp_path / "gen_agentic"
    write_generate_run(agentic, [
        {"weak_mean": 0.2, "strong_mean": 0.8, "gap": 0.6, "rounds_used": 3, "weak_scores": [0.0, 0.2, 0.4]},
        {"weak_mean": 0.4, "strong_mean": 0.8, "gap": 0.4, "rounds_used": 5, "weak_scores": [0.4, 0.4, None]}],
        {"too_easy": 6, "failed_on_strong": 3, "malformed": 1})
    cfg = compose_report("report=paper_cs", "report.plots=false",
                         f"+report.generate_runs={{agentic: {agentic}}}")
    out = tmp_path / "report"
    cells = {(c.row, c.column): c for c in make_report(cfg.report, out, "cs") if c.metric == "data_quality"}

    weak = cells[("weak_mean", "agentic")]
    assert abs(weak.ours - 0.3) < 1e-9 and abs(weak.stderr - 0.1) < 1e-9 and weak.paper == 0.458
    assert cells[("gap", "agentic")].ours == 0.5 and cells[("rounds_per_accepted", "agentic")].ours == 4.0
    assert cells[("share_too_easy", "agentic")].ours == 0.6 and cells[("share_too_easy", "agentic")].paper == 0.80
    # A share of the 10 rounds before acceptance, with its binomial standard error
    assert cells[("share_too_easy", "agentic")].n == 10 and abs(cells[("share_too_easy", "agentic")].stderr
                                                                - (0.6 * 0.4 / 10) ** 0.5) < 1e-9
    assert abs(cells[("share_failed_on_strong", "agentic")].ours - 0.3) < 1e-9
    # CS has no loop judge: the suitability row cannot apply and is not in the report
    assert ("share_suitability_high", "agentic") not in cells
    # Weak-sample spread: std 0.2 and 0.0 (a failed grade is left out); one of two examples gives GRPO no signal
    assert abs(cells[("weak_std", "agentic")].ours - 0.1) < 1e-9
    assert cells[("share_weak_all_equal", "agentic")].ours == 0.5
    # No CoT run named: every CoT cell is missing, with the paper's number only in its own slot.
    cot = cells[("weak_mean", "cot")]
    assert cot.ours is None and cot.paper == 0.677 and "no run named in report.generate_runs" in cot.source

    md = (out / "report.md").read_text()
    assert "## Data quality (generate runs)" in md
    assert "| weak mean | missing (paper 0.677, diff -) | 0.300 ± 0.100 (n=2) (paper 0.458, diff -0.158) |" in md
    assert ("| rounds per accepted example | missing (paper 1.000, diff -) | 4.000 ± 1.000 (n=2) (paper 6.590, "
            "diff -2.590) |") in md
    assert "GRPO suitability" not in md
    with (out / "report.csv").open() as fh:
        table = {(r["row"], r["column"]): r for r in csv.DictReader(fh) if r["metric"] == "data_quality"}
    assert table[("strong_mean", "cot")]["ours"] == "missing" and table[("strong_mean", "cot")]["paper"] == "0.696"
    assert table[("gap", "agentic")]["ours"] == "0.500000"


def test_failure_shares_of_a_stats_json_without_rounds_before_acceptance_are_missing(tmp_path):
    """An older stats.json shared out the rejected rounds of every document, not the paper's rounds before
    acceptance: the table says so instead of showing that number."""
    old = tmp_path / "gen_old"
    old.mkdir()
    (old / "accepted.jsonl").write_text(json.dumps({"weak_mean": 0.2, "rounds_used": 2}) + "\n")
    (old / "stats.json").write_text(json.dumps({"failure_reasons": {"too_easy": 3},
                                                "failure_reason_shares": {"too_easy": 1.0}}))
    cfg = compose_report("report=paper_cs", "report.plots=false", f"+report.generate_runs={{agentic: {old}}}")
    cells = {(c.row, c.column): c for c in make_report(cfg.report, tmp_path / "report") if c.metric == "data_quality"}
    share = cells[("share_too_easy", "agentic")]
    assert share.ours is None and "predates the rounds-before-acceptance shares" in share.source
    assert cells[("weak_mean", "agentic")].ours == 0.2


def test_generate_runs_alone_make_a_report_and_a_run_without_outputs_is_missing(tmp_path):
    empty = tmp_path / "never_generated"
    cfg = compose_report("report.plots=false", f"+report.generate_runs={{cot: {empty}}}")
    cells = make_report(cfg.report, tmp_path / "report")
    assert {c.metric for c in cells} == {"data_quality"}
    assert all(c.ours is None and "neither accepted.jsonl nor stats.json" in c.source for c in cells)
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| weak mean | missing (paper -, diff -) |" in md and "## mean_at_3" not in md


def test_science_table_shows_gains_over_the_base_row(tmp_path):
    base, agentic = tmp_path / "eval_base", tmp_path / "eval_agentic"
    write_eval_run(base, {"val": {"avg_at_8": {"value": 0.70, "stderr": 0.03, "n": 50},
                                  "truncation_rate": {"value": 0.2, "stderr": 0.01, "n": 400}}})
    write_eval_run(agentic, {"val": {"avg_at_8": {"value": 0.75, "stderr": 0.04, "n": 50},
                                     "truncation_rate": {"value": 0.05, "stderr": 0.01, "n": 400}}})
    cfg = compose_report("report=paper_science", "report.plots=false",
                         f"+report.runs={{base/validation: {base}, grpo_agentic/validation: {agentic}, "
                         f"grpo_cot/validation: {agentic}}}")
    by = {(c.row, c.column, c.metric): c for c in make_report(cfg.report, tmp_path / "report")}
    gain = by[("grpo_agentic", "validation", "avg_at_8")]
    assert abs(gain.ours - 0.05) < 1e-9 and abs(gain.stderr - 0.05) < 1e-9 and gain.paper == 0.0320
    assert abs(gain.diff - 0.018) < 1e-9
    # The base row stays absolute; truncation is not a delta metric.
    assert by[("base", "validation", "avg_at_8")].ours == 0.70
    assert by[("grpo_agentic", "validation", "truncation_rate")].ours == 0.05
    assert by[("grpo_combined", "principia", "avg_at_8")].ours is None
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## avg_at_8 (difference from base)" in md
    assert "0.0500 ± 0.0500 (n=50) (paper 0.0320, diff +0.0180)" in md


def test_legal_table_has_a_column_per_judge(tmp_path):
    run = tmp_path / "eval_legal"
    gpt5 = {"mean_at_1": {"value": 0.40, "stderr": 0.02, "n": 30}}
    kimi = {"mean_at_1": {"value": 0.47, "stderr": 0.03, "n": 30}}
    write_eval_run(run, {"prbench_legal": {**gpt5, "primary_judge": "judge_gpt5", "samples": 30, "judge_failures": 0,
                                           "by_judge": {"judge_gpt5": {**gpt5, "judge_failures": 0},
                                                        "judge": {**kimi, "judge_failures": 2}}}})
    cfg = compose_report("report=paper_legal", "report.plots=false",
                         f"+report.runs={{grpo_agentic_4b/prbench_legal: {run}, "
                         f"grpo_agentic_4b/prbench_legal_kimi: '{run}@judge', "
                         f"grpo_agentic_4b/prbench_legal_hard_kimi: '{run}#prbench_legal@judge_nobody'}}")
    validate(cfg)
    cells = make_report(cfg.report, tmp_path / "report", "legal")
    by = {(c.row, c.column): c for c in cells if c.metric != "data_quality"}
    assert len(by) == 3 * 4 and by[("base_397b", "prbench_legal_hard")].paper == 0.277
    quality = {(c.row, c.column): c for c in cells if c.metric == "data_quality"}
    assert quality[("weak_std", "agentic")].paper == 0.1263 and quality[("weak_std", "agentic")].ours is None
    assert quality[("share_suitability_high", "cot")].paper == 0.048
    # The plain spec reads the primary judge (GPT-5, whose numbers the paper publishes)
    assert abs(by[("grpo_agentic_4b", "prbench_legal")].diff + 0.041) < 1e-9
    kimi_cell = by[("grpo_agentic_4b", "prbench_legal_kimi")]
    assert kimi_cell.ours == 0.47 and kimi_cell.paper is None and kimi_cell.source.endswith("@judge")
    nobody = by[("grpo_agentic_4b", "prbench_legal_hard_kimi")]
    assert nobody.ours is None and "was not graded by judge 'judge_nobody' (judges: judge, judge_gpt5)" in nobody.source
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| PRBench-Legal (GPT-5) | PRBench-Legal-Hard (GPT-5) | PRBench-Legal (Kimi-K2.6) |" in md
    # The judge that failed on 2 samples: shown with its count (and only that one)
    assert f"- 4B GRPO on Agentic data (2.8k) / PRBench-Legal (Kimi-K2.6): 2 of 30 samples ({run}#prbench_legal@judge)" in md
    assert md.count("of 30 samples") == 1
    assert "| 397B base, no RL | missing (paper 0.404, diff -) | missing (paper 0.277, diff -) | missing" in md


def test_the_judge_failures_line_names_the_cells_own_run(tmp_path):
    # A run with judge failures that lacks the table's last metric (evaluated with eval.n=1: no best_at_3)
    short = tmp_path / "eval_short"
    write_eval_run(short, {"val": {"mean_at_3": {"value": 0.5, "stderr": 0.1, "n": 10}, "samples": 30,
                                   "judge_failures": 2}})
    cfg = compose_report("report.plots=false", f"+report.runs={{base/val: {short}}}")
    make_report(cfg.report, tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert f"- base / val: 2 of 30 samples ({short}#val)\n" in md
    # A delta row whose base row is missing: the line names its own run, not the reason about the base row
    base, grpo = tmp_path / "eval_base", tmp_path / "eval_grpo"
    write_eval_run(base, {"val": {"truncation_rate": {"value": 0.2, "stderr": 0.01, "n": 400}}})
    write_eval_run(grpo, {"val": {"truncation_rate": {"value": 0.1, "stderr": 0.01, "n": 400},
                                  "avg_at_8": {"value": 0.7, "stderr": 0.03, "n": 50},
                                  "samples": 400, "judge_failures": 3}})
    cfg = compose_report("report.plots=false", "report.metrics=[truncation_rate,avg_at_8]", "report.delta_from=base",
                         "report.delta_metrics=[avg_at_8]", f"+report.runs={{base/val: {base}, grpo/val: {grpo}}}")
    cells = {(c.row, c.metric): c for c in make_report(cfg.report, tmp_path / "report_delta")}
    assert "the base row it is a difference from is missing" in cells[("grpo", "avg_at_8")].source
    md = (tmp_path / "report_delta" / "report.md").read_text()
    assert f"- grpo / val: 3 of 400 samples ({grpo}#val)\n" in md


def test_plots_are_written_and_a_plot_without_data_is_named_as_skipped(tmp_path):
    gen = tmp_path / "gen"
    write_generate_run(gen, [{"weak_mean": 0.2, "strong_mean": 0.9, "gap": 0.7, "rounds_used": 2,
                              "weak_scores": [0.1, 0.3]}], {})
    cfg = compose_report(f"+report.generate_runs={{agentic: {gen}}}")
    out = tmp_path / "report"
    make_report(cfg.report, out)
    for name in ("scores_weak_strong.png", "gap_hist.png", "rounds_hist.png", "weak_all_equal.png",
                 "headline_quality.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "![weak vs strong scores](scores_weak_strong.png)" in md
    assert not (out / "truncation.png").exists()
    assert "Skipped: no eval run has truncation_rate." in md


def test_report_tables_doctests():
    import doctest

    import autodata.tracking
    import eval.cells
    import eval.flips
    import eval.report
    import eval.report_tables
    import eval.sets

    for module in (eval.report_tables, eval.report, eval.cells, eval.sets, eval.flips, autodata.tracking):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_truncation_plot_from_eval_runs_and_no_generate_plots_without_generate_runs(tmp_path):
    run = tmp_path / "eval_base"
    write_eval_run(run, {"val": {"mean_at_3": {"value": 0.5, "stderr": 0.1, "n": 10},
                                 "truncation_rate": {"value": 0.25, "stderr": 0.05, "n": 30}}})
    cfg = compose_report("report.metrics=[mean_at_3]", f"+report.runs={{base/val: {run}}}")
    out = tmp_path / "report"
    make_report(cfg.report, out)
    assert (out / "truncation.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "report.md").read_text()
    assert "![truncation rate per model](truncation.png)" in md and "## Data quality" not in md
    assert md.count("Skipped: no generate run with accepted examples.") == 1
    assert not (out / "gap_hist.png").exists() and "Skipped: no accepted example has gap." in md


def test_a_corrupt_metrics_file_is_a_missing_cell_with_the_reason(tmp_path):
    run = tmp_path / "eval_torn"
    run.mkdir()
    (run / "metrics.json").write_text('{"n": 3, "datas')
    cfg = compose_report("report=paper_cs", "report.plots=false", f"+report.runs={{base/cot_test: {run}}}")
    cells = {(c.row, c.column, c.metric): c for c in make_report(cfg.report, tmp_path / "report")}
    cell = cells[("base", "cot_test", "mean_at_3")]
    assert cell.ours is None and "is not an eval metrics file (JSONDecodeError" in cell.source
    assert f"rerun stage=eval with hydra.run.dir={run}" in cell.source


def test_report_logs_its_cells_and_plots_to_an_offline_wandb_run(tmp_path, monkeypatch):
    from eval.report import run as run_report
    from tests.wandb_offline import read_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    present = tmp_path / "eval_base"
    write_eval_run(present, {"val": {"mean_at_3": {"value": 0.65, "stderr": 0.02, "n": 100},
                                     "truncation_rate": {"value": 0.1, "stderr": 0.01, "n": 300}}})
    cfg = compose_report("report=paper_cs", "logger=wandb", f"+report.runs={{base/cot_test: {present}}}")
    out = tmp_path / "report"
    run_report(cfg, out)
    summary, history = read_run(out)
    # 3 x 2 x 2 table cells and 8 x 2 data-quality cells (CS: no loop judge row); only base/cot_test mean_at_3 has
    # a value
    assert summary["report/cells"] == 28 and summary["report/cells_missing"] == 27
    logged = next(h for h in history if "report/cells/path" in h)
    assert logged["report/cells/nrows"] == 28 and logged["report/truncation/_type"] == "image-file"


def write_samples(path: Path, dataset: str, samples: dict[tuple[str, int], tuple[float, str]]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    rows = [{"format": 2, "dataset": dataset, "prompt_id": p, "sample": i, "completion": "x", "finish_reason": fr,
             "grades": {"judge": {"score": score, "judge_error": None}}}
            for (p, i), (score, fr) in samples.items()]
    (path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_flips_from_fixing_truncation_beside_the_papers_share(tmp_path):
    base, trained = tmp_path / "eval_sci_base", tmp_path / "eval_sci_agentic"
    # p/0 wrong (cut off) -> right; p/1 wrong (finished) -> right; q/0 right -> wrong; q/1 wrong (cut off) -> right
    write_samples(base, "validation", {("p", 0): (0.0, "length"), ("p", 1): (0.0, "stop"), ("q", 0): (1.0, "stop"),
                                       ("q", 1): (0.0, "length")})
    write_samples(trained, "validation", {("p", 0): (1.0, "stop"), ("p", 1): (1.0, "stop"), ("q", 0): (0.0, "stop"),
                                          ("q", 1): (1.0, "stop")})
    cfg = compose_report("report=paper_science", "report.plots=false",
                         f"+report.flips={{validation: [{base}, {trained}]}}")
    validate(cfg)
    cells = [c for c in make_report(cfg.report, tmp_path / "report") if c.metric == "flips"]
    (cell,) = cells
    assert abs(cell.ours - 2 / 3) < 1e-9 and cell.paper == 0.5481
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Wrong-to-right flips" in md
    assert (f"| combined validation | {base}#validation@judge -> {trained}#validation@judge | 4 (0 ungraded left out) "
            "| 3 | 1 | 0.6667 ± 0.2722 (n=3) (paper 0.5481, diff +0.1186) |") in md

    # A trained run that was never evaluated: the cell is missing with the reason, the paper's share stays its own
    cfg = compose_report("report=paper_science", "report.plots=false",
                         f"+report.flips={{validation: [{base}, {tmp_path / 'never'}]}}")
    (cell,) = [c for c in make_report(cfg.report, tmp_path / "report2") if c.metric == "flips"]
    assert cell.ours is None and cell.paper == 0.5481 and "never/samples.jsonl not found" in cell.source
    cfg = compose_report("report=paper_science", f"+report.flips={{validation: [{base}]}}")
    with pytest.raises(ConfigError, match="report.flips.validation .* must name two eval runs"):
        validate(cfg)


def test_a_report_with_every_cell_missing_exits_2_unless_allowed(tmp_path):
    from eval.report import run as run_report

    absent = tmp_path / "no_such_run"
    cfg = compose_report("report=paper_cs", f"+report.runs={{base/cot_test: {absent}}}")
    with pytest.raises(SystemExit) as exit_info:
        run_report(cfg, tmp_path / "report")
    assert exit_info.value.code == 2
    cfg = compose_report("report=paper_cs", "report.allow_empty=true", f"+report.runs={{base/cot_test: {absent}}}")
    run_report(cfg, tmp_path / "report_allowed")
    assert (tmp_path / "report_allowed" / "report.md").exists()
