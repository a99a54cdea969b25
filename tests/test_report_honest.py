"""stage=report says what ran and how sure each number is: n beside every value, n/a where one prompt leaves the
standard error undefined, the models our runs used in the title, rows that cannot apply to a domain left out, a
headline plot per table, titled and labelled plots; and eval's W&B samples table shows what was asked and answered.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import OmegaConf

from autodata.config import register_configs, to_typed
from autodata.domains.base import Criterion, Task
from autodata.generate.outputs import compute_stats
from autodata.provenance import effective, file_sources, override_sources
from eval import plots
from eval.report import make_report
from eval.report_tables import QUALITY_ROWS
from eval.sets import EvalItem, EvalSet
from eval.stage import samples_table

ROOT = Path(__file__).resolve().parents[1]
register_configs()
GROUPS = {"stage", "experiment", "method", "domain", "report", "models", "pipeline", "train", "corpus"}


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return to_typed(compose(config_name="config", overrides=list(overrides)))


def write_run_files(run_dir: Path, *overrides: str) -> None:
    """config.yaml and recipe.json as a run composed with ``overrides`` writes them (autodata/rundir.py,
    autodata/provenance.py): the recipe's sources come from Hydra's defaults list, as in a real run."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = to_typed(compose(config_name="config", overrides=list(overrides)))
        defaults = GlobalHydra.instance().config_loader().compute_defaults_list(
            config_name="config", overrides=list(overrides), run_mode=RunMode.RUN)
    files = file_sources((d.config_path, d.package or "") for d in defaults.defaults
                         if d.config_path and not d.config_path.startswith("hydra/"))
    settings = effective(cfg, files, override_sources(overrides, GROUPS))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    (run_dir / "recipe.json").write_text(json.dumps({"experiment": cfg.experiment.name, "settings": [
        {"key": s.key, "value": s.value, "default": s.default, "source": s.source} for s in settings]}, default=str))


def write_eval_run(path: Path, sets: dict[str, dict], model: str = "embedded") -> None:
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps({"n": 3, "model": model, "judges": {"judge": "embedded"},
                                                   "domain": "cs", "datasets": sets}))


def one_prompt(value: float) -> dict:
    """Metrics of a set with one held-out prompt, as stage=eval writes them (standard error 0.0 for n=1)."""
    return {"mean_at_3": {"value": value, "stderr": 0.0, "n": 1}, "best_at_3": {"value": value, "stderr": 0.0, "n": 1},
            "truncation_rate": {"value": 1 / 3, "stderr": 0.27, "n": 3}, "samples": 3, "judge_failures": 0}


def write_generate_run(path: Path, method: str, domain: str = "cs", rejected_first: bool = False) -> None:
    """A generate run of two documents; with ``rejected_first`` document a is accepted in round 3 after a round
    rejected as too easy and one that failed on strong (stats.json from the generate stage's own compute_stats)."""
    rounds, accepted = [], []
    for doc, weak in (("a", [0.2, 0.4]), ("b", [0.1, 0.1])):
        if rejected_first and doc == "a":
            rounds += [{"document_id": doc, "round": 1, "status": "rejected", "reason": "too_easy"},
                       {"document_id": doc, "round": 2, "status": "rejected", "reason": "failed_on_strong"}]
        used = 3 if rejected_first and doc == "a" else 1
        rounds.append({"document_id": doc, "round": used, "status": "accepted", "reason": None})
        row = {"id": f"{method}/{doc}", "document_id": doc, "domain": domain, "method": method, "weak_scores": weak,
               "strong_scores": [0.6, 0.8], "weak_mean": sum(weak) / 2, "strong_mean": 0.7,
               "gap": 0.7 - sum(weak) / 2, "rounds_used": used}
        if domain == "legal":
            row["loop_judge"] = {"grpo_suitability": "high" if doc == "a" else "low"}
        accepted.append(row)
    ledger = [{"document_id": r["document_id"], "status": "accepted"} for r in accepted]
    path.mkdir(parents=True, exist_ok=True)
    (path / "accepted.jsonl").write_text("".join(json.dumps(r) + "\n" for r in accepted))
    (path / "stats.json").write_text(json.dumps(compute_stats(rounds, ledger, accepted, 2)))


def read_csv(path: Path) -> dict[tuple[str, str, str], dict]:
    with path.open() as fh:
        return {(r["row"], r["column"], r["metric"]): r for r in csv.DictReader(fh)}


def test_one_prompt_shows_na_for_the_standard_error_and_n_everywhere(tmp_path):
    run = tmp_path / "eval_base"
    write_eval_run(run, {"cot_test": one_prompt(0.143), "agentic_test": {
        "mean_at_3": {"value": 0.5, "stderr": 0.1, "n": 12}, "best_at_3": {"value": 0.6, "stderr": 0.1, "n": 12}}})
    cfg = compose_cfg("stage=report", "report=paper_cs", "report.plots=false",
                      f"+report.runs={{base/cot_test: '{run}#cot_test', base/agentic_test: '{run}#agentic_test'}}")
    out = tmp_path / "report"
    cells = {(c.row, c.column, c.metric): c for c in make_report(cfg.report, out, "cs")}
    one = cells[("base", "cot_test", "mean_at_3")]
    assert one.n == 1 and one.stderr is None
    md = (out / "report.md").read_text()
    assert ("| base | 0.143 ± n/a (n=1) (paper 0.630, diff -0.487) | 0.500 ± 0.100 (n=12) (paper 0.366, "
            "diff +0.134) |") in md
    assert "± 0.000" not in md
    table = read_csv(out / "report.csv")
    one_row = table[("base", "cot_test", "mean_at_3")]
    assert one_row["stderr"] == "n/a" and one_row["n"] == "1"
    assert table[("base", "agentic_test", "best_at_3")]["stderr"] == "0.100000"
    assert table[("base", "agentic_test", "best_at_3")]["n"] == "12"
    # A missing cell has no n and no standard error
    missing = table[("grpo_cot", "cot_test", "mean_at_3")]
    assert missing["ours"] == "missing" and missing["n"] == "" == missing["stderr"]


def test_a_difference_from_a_one_prompt_base_row_has_no_standard_error(tmp_path):
    base, trained = tmp_path / "eval_base", tmp_path / "eval_grpo"
    write_eval_run(base, {"val": {"avg_at_8": {"value": 0.5, "stderr": 0.0, "n": 1}}})
    write_eval_run(trained, {"val": {"avg_at_8": {"value": 0.6, "stderr": 0.1, "n": 9}}})
    cfg = compose_cfg("stage=report", "report.plots=false", "report.metrics=[avg_at_8]", "report.delta_from=base",
                      "report.delta_metrics=[avg_at_8]", f"+report.runs={{base/val: {base}, grpo/val: {trained}}}")
    cells = {c.row: c for c in make_report(cfg.report, tmp_path / "report")}
    assert abs(cells["grpo"].ours - 0.1) < 1e-9 and cells["grpo"].stderr is None and cells["grpo"].n == 1


def test_a_row_that_cannot_apply_to_the_domain_is_left_out(tmp_path):
    """GRPO suitability is the loop judge's rating: legal has one, CS does not; the row is declared once."""
    assert QUALITY_ROWS["share_suitability_high"].domains() == ["legal"]
    assert QUALITY_ROWS["weak_mean"].domains() == ["cs", "legal", "principia", "folder"]
    for domain, report in (("cs", "paper_cs"), ("legal", "paper_legal")):
        gen = tmp_path / f"gen_{domain}"
        write_generate_run(gen, "agentic", domain=domain)
        cfg = compose_cfg("stage=report", f"report={report}", "report.plots=false",
                          f"+report.generate_runs={{agentic: {gen}}}")
        out = tmp_path / f"report_{domain}"
        # The domain comes from the runs' rows (accepted.jsonl records it), not from the report stage's own
        cells = {(c.row, c.column) for c in make_report(cfg.report, out, "principia") if c.metric == "data_quality"}
        md = (out / "report.md").read_text()
        rows = {row for row, _column, _metric in read_csv(out / "report.csv")}
        if domain == "cs":
            assert ("share_suitability_high", "agentic") not in cells and "GRPO suitability" not in md
            assert "share_suitability_high" not in rows
        else:
            assert ("share_suitability_high", "agentic") in cells and "share_suitability_high" in rows
            assert "0.500 ± 0.500 (n=2) (paper 0.520, diff -0.020)" in md
    # Without any recorded domain the report stage's domain decides
    bare = tmp_path / "gen_bare"
    bare.mkdir()
    (bare / "stats.json").write_text(json.dumps({"rounds_before_acceptance": 0}))
    cfg = compose_cfg("stage=report", "report.plots=false", f"+report.generate_runs={{agentic: {bare}}}")
    assert "share_suitability_high" not in {c.row for c in make_report(cfg.report, tmp_path / "r_bare", "cs")}
    assert "share_suitability_high" in {c.row for c in make_report(cfg.report, tmp_path / "r_bare2", "legal")}


def test_rejected_then_accepted_rounds_fill_every_row_of_the_cs_report(tmp_path):
    """What experiment=cpu_mini must produce for its report to have no missing data-quality row: the agentic column
    filled from rounds rejected before an acceptance, the CoT column's round rows marked as not applying."""
    cot, agentic = tmp_path / "generate_cot", tmp_path / "generate_agentic"
    write_generate_run(cot, "cot")
    write_generate_run(agentic, "agentic", rejected_first=True)
    cfg = compose_cfg("stage=report", "report=paper_cs", f"+report.generate_runs={{cot: {cot}, agentic: {agentic}}}")
    out = tmp_path / "report"
    cells = [c for c in make_report(cfg.report, out, "cs") if c.metric == "data_quality"]
    empty = [(c.row, c.column, c.source) for c in cells if c.ours is None]
    assert cells and not empty, empty
    by = {(c.row, c.column): c for c in cells}
    assert by[("share_too_easy", "agentic")].ours == 0.5 and by[("share_too_easy", "agentic")].n == 2
    assert by[("rounds_per_accepted", "agentic")].ours == 2.0
    md = (out / "report.md").read_text()
    section = md[md.index("## Data quality"):md.index("## Meta-optimization")]
    assert "missing" not in section and "n/a (n=0)" not in section
    assert ("| rounds before acceptance: too easy | does not apply (cot: one round per document, none before an "
            "acceptance) | 0.500 ± 0.354 (n=2) (paper 0.800, diff -0.300) |") in section
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| measure")]
    assert len(rows) == len(QUALITY_ROWS) - 1  # every row but the legal-only one


def test_the_title_names_the_models_that_ran_and_the_loosened_acceptance(tmp_path):
    gen = tmp_path / "generate_agentic"
    write_generate_run(gen, "agentic")
    # As the pipeline's generate step runs it (cpu_mini's stage_overrides)
    write_run_files(gen, "stage=generate", "experiment=cpu_mini", "method=agentic",
                    "models.roles.judge.temperature=1.0")
    train = tmp_path / "train_agentic"
    write_run_files(train, "stage=train", "experiment=cpu_mini")
    base, trained = tmp_path / "eval_base", tmp_path / "eval_grpo"
    write_eval_run(base, {"agentic_test": one_prompt(0.2)})
    write_eval_run(trained, {"agentic_test": one_prompt(0.25)}, model=str(train / "final"))
    write_run_files(base, "stage=eval", "experiment=cpu_mini")
    cfg = compose_cfg("stage=report", "report=paper_cs", "report.plots=false",
                      f"+report.runs={{base/agentic_test: '{base}#agentic_test', "
                      f"grpo_agentic/agentic_test: '{trained}#agentic_test'}}",
                      f"+report.generate_runs={{agentic: {gen}}}")
    out = tmp_path / "report"
    make_report(cfg.report, out, "cs")
    md = (out / "report.md").read_text()
    title = md.splitlines()[0]
    assert title == "# CS: mean@3 / best@3 on held-out sets: ours on SmolLM2-135M-Instruct (embedded)"
    assert "Experiment `cpu_mini`: the CS table's pipeline on the embedded 135M model" in md
    assert "- strong solver: SmolLM2-135M-Instruct (embedded)" in md
    assert "- judge: SmolLM2-135M-Instruct (embedded) (verdicts sampled at temperature 1)" in md
    assert f"- evaluated as GRPO on Agentic data: GRPO of SmolLM2-135M-Instruct (embedded) ({train / 'final'})" in md
    assert "The paper's models: Qwen3.5-4B trained and evaluated" in md
    # cpu_mini loosens the deployed rule (conf/domain/cs_deployed.yaml: weak mean <= 0.65, strong mean >= 0.60)
    line = next(x for x in md.splitlines() if x.startswith("Acceptance"))
    assert line.startswith("Acceptance loosened vs the paper's thresholds (Agentic data, set by "
                           "conf/experiment/cpu_mini.yaml): ")
    assert "(paper 0.65)" in line and "(paper 0.6)" in line
    # An eval run without config.yaml is named as such
    assert f"runs without a readable config.yaml (models not known): {trained}" in md


def assert_labelled(fig) -> None:
    for ax in fig.axes:
        assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel(), (ax.get_title(), ax.get_xlabel())


def test_every_plot_is_titled_and_labelled_with_error_bars_lines_and_shared_integer_bins(tmp_path):
    panel = plots.Bars("mean_at_3", "mean_at_3", ["base / CoT test", "base / Agentic test"], [0.2, None],
                       [0.05, None], [12, None], [0.63, 0.366])
    fig, _ = plots.headline([panel], "CS: ours vs the paper")
    assert_labelled(fig)
    from matplotlib.container import BarContainer

    (container, _paper) = [c for c in fig.axes[0].containers if isinstance(c, BarContainer)]
    assert [round(p.get_height(), 3) for p in container.patches] == [0.2, 0.0]
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "n=12" in texts and "missing" in texts
    # The whisker of the first bar spans ± its standard error
    (segment, _none) = container.errorbar.lines[2][0].get_segments()
    assert abs(segment[1][1] - segment[0][1] - 0.1) < 1e-9

    fig, _ = plots.share_bars({"base / CoT test": (0.25, 0.05, 30)}, {"base / CoT test": 0.2375},
                              title="Truncation rate", ylabel="truncation rate", missing="none")
    assert_labelled(fig)
    (ours, _paper) = [c for c in fig.axes[0].containers if isinstance(c, BarContainer)]
    (segment,) = ours.errorbar.lines[2][0].get_segments()
    assert abs(segment[1][1] - segment[0][1] - 0.1) < 1e-9

    fig, _ = plots.histogram({"cot": [1, 1], "agentic": [1, 3, 4]}, title="Rounds", xlabel="rounds used",
                             integer=True, lines=[plots.Line(6.59, "paper agentic 6.59")])
    assert_labelled(fig)
    ax = fig.axes[0]
    widths = {round(p.get_width(), 6) for p in ax.patches}
    assert widths == {1.0}
    # Both runs on the same bins, centred on the integers, reaching the paper's line
    lefts = [round(p.get_x(), 6) for p in ax.patches]
    assert lefts[:len(lefts) // 2] == lefts[len(lefts) // 2:] and min(lefts) == 0.5
    assert [t for t in ax.get_xticks()] == [1, 2, 3, 4, 5, 6, 7]
    assert "paper agentic 6.59" in [line.get_label() for line in ax.get_lines()]

    fig, _ = plots.score_distributions({"agentic": [{"weak_mean": 0.2, "strong_mean": 0.7}]},
                                       {"agentic": [plots.Line(0.5, "cs_paper weak_max 0.5", kind="threshold")]},
                                       {"agentic": "Agentic data"})
    assert_labelled(fig)
    assert "cs_paper weak_max 0.5" in [line.get_label() for line in fig.axes[0].get_lines()]
    for fig in plots._pyplot().get_fignums():
        plots._pyplot().close(fig)


def test_a_headline_plot_per_table(tmp_path):
    base, trained = tmp_path / "eval_base", tmp_path / "eval_grpo"
    write_eval_run(base, {"validation": one_prompt(0.5)})
    write_eval_run(trained, {"validation": one_prompt(0.6)})
    for run, scores in ((base, (0.0, 1.0)), (trained, (1.0, 1.0))):
        rows = [{"format": 2, "dataset": "validation", "prompt_id": "p", "sample": i, "completion": "x",
                 "finish_reason": "length" if run == base else "stop",
                 "grades": {"judge": {"score": s, "judge_error": None}}} for i, s in enumerate(scores)]
        (run / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    gen = tmp_path / "gen"
    write_generate_run(gen, "agentic", rejected_first=True)
    meta = tmp_path / "meta"
    meta.mkdir()
    (meta / "summary.json").write_text(json.dumps({"score_name": "pass_rate", "baseline_score": 0.5,
                                                   "best_score": 0.6, "iterations": 2, "kept": 1}))
    cfg = compose_cfg("stage=report", "report=paper_science", f"+report.runs={{base/validation: '{base}#validation', "
                      f"grpo_agentic/validation: '{trained}#validation'}}",
                      f"+report.flips={{validation: ['{base}#validation', '{trained}#validation']}}",
                      f"+report.generate_runs={{agentic: {gen}}}", f"+report.meta_runs={{ours: {meta}}}")
    out = tmp_path / "report"
    make_report(cfg.report, out, "principia")
    md = (out / "report.md").read_text()
    for name in ("headline_eval", "headline_quality", "headline_flips", "headline_meta", "truncation",
                 "rounds_hist", "gap_hist", "scores_weak_strong", "weak_all_equal"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
        assert f"]({name}.png)" in md
    # Each headline follows its own table
    assert md.index("## avg_at_8") < md.index("headline_eval.png") < md.index("## Data quality")
    assert md.index("## Wrong-to-right flips") < md.index("headline_flips.png") < md.index("## Meta-optimization")


def test_eval_samples_table_shows_question_reference_answer_score_and_truncation():
    task = Task(question="Why does X hold?", context="", reference_answer="Because Y.",
                rubric=[Criterion(criterion="mentions Y", weight=5)])
    sets = [EvalSet("cot_test", "runs/g", "generate", [EvalItem("q1", [{"role": "user", "content": "?"}], task)])]
    rows = [{"dataset": "cot_test", "prompt_id": "q1", "sample": i, "completion": text, "finish_reason": reason,
             "completion_tokens": 9, "grades": {"judge": {"score": score}, "judge_kimi": {"score": 0.5}}}
            for i, (text, reason, score) in enumerate((("<think>hm</think>Because Y.", "stop", 1.0),
                                                       ("<think>cut off", "length", 0.0)))]
    columns, data = samples_table({"judges": {"judge": "m", "judge_kimi": "k"}}, rows, sets, strip_reasoning=True)
    for name in ("question", "reference", "answer", "score", "truncated"):
        assert name in columns
    first, second = (dict(zip(columns, values)) for values in data)
    assert (first["question"], first["reference"], first["answer"], first["score"], first["truncated"]) == (
        "Why does X hold?", "Because Y.", "Because Y.", 1.0, False)
    assert second["truncated"] is True and second["score"] == 0.0 and second["answer"] == ""
    assert columns[-2:] == ["score/judge", "score/judge_kimi"] and first["score/judge_kimi"] == 0.5


def test_cpu_mini_rejects_rounds_before_acceptances_whatever_the_rubric():
    """cpu_mini's sizing (see its file): an answer-blind sampling judge makes the weak and strong scores of a round
    exchangeable, so the gap rule rejects a round (failed on strong) with probability (1 - P(tie)) / 2 whatever the
    score distribution, and 6 documents x 3 rounds then show a rejected round before an acceptance with > 0.9."""
    import random

    from autodata.acceptance import build_policy

    cfg = compose_cfg("stage=pipeline", "experiment=cpu_mini")
    acc = cfg.domain.acceptance
    # The paper's deployed rule (the domain option), only loosened by the experiment: the gap alone decides
    assert acc.policy == "cs_deployed" and acc.min_gap == 0.0 and acc.weak_max == 1.0 and acc.strong_min == 0.0
    assert "models.roles.judge.temperature=1.0" in cfg.pipeline.stage_overrides["generate"]
    policy = build_policy(acc)
    # A greedy judge scores every run of a task alike: accepted at once, never stuck
    assert policy.decide([0.2, 0.2], [0.2, 0.2]).accepted
    rng = random.Random(0)
    for weights in ([2, 5, 5, 1, 1], [5, 5, 5, 5, 5], [1, 2, 2, 1]):
        def run() -> float:
            return sum(w for w in weights if rng.random() < 0.5) / sum(weights)

        decisions = [policy.decide([run() for _ in range(cfg.generate.weak_samples)],
                                   [run() for _ in range(cfg.generate.strong_samples)]) for _ in range(4000)]
        p = sum(not d.accepted for d in decisions) / len(decisions)
        assert {d.reason for d in decisions if not d.accepted} == {"failed_on_strong"}
        assert 0.35 < p < 0.5, (weights, p)
        shows = p * (1 - p ** (cfg.generate.max_rounds - 1))
        assert 1 - (1 - shows) ** cfg.corpus.limit > 0.9, (weights, p)
        # At least two accepted documents (one to train on, one held out)
        exhausted = p ** cfg.generate.max_rounds
        assert 1 - exhausted ** cfg.corpus.limit - cfg.corpus.limit * exhausted ** (cfg.corpus.limit - 1) > 0.999


def test_report_honest_doctests():
    import doctest

    import eval.plots
    import eval.report_header
    import eval.report_plots

    for module in (eval.plots, eval.report_header, eval.report_plots):
        assert doctest.testmod(module).failed == 0, module.__name__
