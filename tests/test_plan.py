"""stage=plan: golden call counts of the paper's CS arm under the documented call model, a pilot scaled by hand,
the fleet arithmetic, the memory plan (the 397B on H200 and H100 nodes), and the CLI without endpoints or API keys."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from autodata.config import PlanTokens, register_configs, to_typed
from autodata.plan import make_plan, memory_lines, read_pilot
from autodata.validation import ConfigError, InputError, validate

ROOT = Path(__file__).resolve().parents[1]
register_configs()


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return to_typed(compose(config_name="config", overrides=["stage=plan", *overrides]))


def calls(plan: dict) -> dict[str, float]:
    return {role: row["calls"] for role, row in plan["roles"].items()}


# The paper's CS arm: 1,300 accepted examples, 6.59 rounds per accepted example, 3 weak + 3 strong samples,
# one challenger per round, the quality verifier on (experiment=paper_cs). Without early exit (every sample drawn)
# unless a test says otherwise, so the arithmetic below is the call model's upper bound.
NO_EARLY_EXIT = "generate.early_exit=false"
ROUNDS = 1300 * 6.59  # = 8,567 rounds
REJECTED = ROUNDS - 1300  # = 7,267 rounds end without an example: one feedback call each


def test_paper_cs_call_counts_with_every_round_reaching_the_strong_solver():
    plan = make_plan(composed("experiment=paper_cs", "plan.target=1300", "plan.too_easy_share=0", NO_EARLY_EXIT))
    assert ROUNDS == pytest.approx(8567) and REJECTED == pytest.approx(7267)
    expected = {
        "challenger": 8567,  # one challenger per round
        "quality_verifier": 8567,  # every task is verified
        "weak_solver": 8567 * 3,  # = 25,701 samples
        "strong_solver": 8567 * 3,  # = 25,701: too_easy_share=0, every round reaches it
        "judge": 8567 * 6,  # = 51,402: one judge call per solver sample
        "feedback": 7267,  # one diagnosis per rejected round
    }
    assert calls(plan) == pytest.approx(expected)
    assert plan["totals"]["calls"] == pytest.approx(8567 + 8567 + 25701 + 25701 + 51402 + 7267)


def test_paper_cs_call_counts_with_the_papers_too_easy_share():
    plan = make_plan(composed("experiment=paper_cs", "plan.target=1300", NO_EARLY_EXIT))
    # 80% of the 7,267 rejected rounds are too easy: 5,813.6 rounds never call the strong solver, so
    # 8,567 - 5,813.6 = 2,753.4 rounds reach it
    strong_rounds = 8567 - 0.8 * 7267
    assert strong_rounds == pytest.approx(2753.4)
    expected = {
        "challenger": 8567,
        "quality_verifier": 8567,
        "weak_solver": 25701,
        "strong_solver": 3 * 2753.4,  # = 8,260.2
        "judge": 25701 + 3 * 2753.4,  # = 33,961.2
        "feedback": 7267,
    }
    assert calls(plan) == pytest.approx(expected)
    assert plan["model"]["too_easy_rounds"] == pytest.approx(5813.6)


def test_early_exit_draws_fewer_samples_in_the_rounds_that_fail():
    plan = make_plan(composed("experiment=paper_cs", "plan.target=1300"))
    # cs_paper with k = 3 (weak mean < weak_max, strong mean >= strong_min): two weak runs of 1.0 make a too-easy
    # round certain, and two strong runs of 0 a round that fails on strong, so the third sample is not drawn
    assert (plan["model"]["weak_samples_too_easy"], plan["model"]["strong_samples_failed"]) == (2, 2)
    too_easy, too_hard = 0.8 * 7267, 0.2 * 7267  # 5,813.6 and 1,453.4 rounds
    weak = 3 * (1300 + too_hard) + 2 * too_easy  # = 19,887.4: accepting and failed-on-strong rounds draw all 3
    strong = 3 * 1300 + 2 * too_hard  # = 6,806.8: too-easy rounds never reach it
    assert calls(plan) == pytest.approx({"challenger": 8567, "quality_verifier": 8567, "weak_solver": weak,
                                         "strong_solver": strong, "judge": weak + strong, "feedback": 7267})


def test_tokens_gpu_hours_and_cost_follow_the_declared_figures():
    plan = make_plan(composed(
        "experiment=paper_cs", "plan.target=1300", "plan.too_easy_share=0", NO_EARLY_EXIT,
        "plan.tokens.weak_solver.output=4000", "plan.tokens.judge.input=5000", "plan.tokens.judge.output=500",
        "plan.roles.weak_solver.replica_tokens_per_s=3000", "plan.roles.weak_solver.replicas=32",
        "plan.roles.strong_solver.replica_tokens_per_s=1500", "plan.roles.strong_solver.gpus_per_replica=8",
        "plan.tokens.strong_solver.output=4000",
        "plan.roles.judge.price_in_per_mtok=0.6", "plan.roles.judge.price_out_per_mtok=2.5"))
    weak, strong, judge = (plan["roles"][r] for r in ("weak_solver", "strong_solver", "judge"))
    # 25,701 samples x 4,000 tokens = 102.804M tokens; / 3,000 tokens/s / 3,600 = 9.519 GPU-hours (1 GPU each)
    assert weak["output_tokens"] == pytest.approx(25701 * 4000)
    assert weak["gpu_hours"] == pytest.approx(102.804e6 / 3000 / 3600)
    # The same tokens on the 397B: / 1,500 tokens/s / 3,600 = 19.04 replica-hours x 8 GPUs = 152.3 GPU-hours
    assert strong["gpu_hours"] == pytest.approx(102.804e6 / 1500 / 3600 * 8)
    # 51,402 judge calls: 257.01M input tokens x $0.6/M + 25.701M output tokens x $2.5/M = $218.46
    assert judge["cost"] == pytest.approx(257.01 * 0.6 + 25.701 * 2.5)
    assert plan["totals"]["cost"] == pytest.approx(judge["cost"])
    assert plan["totals"]["gpu_hours"] == pytest.approx(weak["gpu_hours"] + strong["gpu_hours"])
    assert "cost" not in weak and "gpu_hours" not in judge


PAPER_FLEET = ("experiment=paper_cs", "plan.target=1300", NO_EARLY_EXIT,
               "plan.roles.weak_solver.replica_tokens_per_s=3000", "plan.roles.weak_solver.replicas=32",
               "plan.roles.weak_solver.latency_s=60",
               "plan.roles.strong_solver.replica_tokens_per_s=1500", "plan.roles.strong_solver.gpus_per_replica=8",
               "plan.roles.strong_solver.latency_s=90")


def test_the_fleet_names_the_bottleneck_and_what_keeps_it_busy():
    plan = make_plan(composed(*PAPER_FLEET))
    fleet, weak, strong = plan["fleet"], plan["roles"]["weak_solver"], plan["roles"]["strong_solver"]
    # strong: 8,260.2 samples x 4,000 tokens / 1,500 tokens/s / 3,600 = 6.119 h on its one replica; its concurrency
    # cap (256 calls in flight, models=paper) would allow 8,260.2 x 90 s / 256 / 3,600 = 0.81 h: throughput-bound
    assert fleet["bottleneck"] == "strong_solver"
    assert fleet["wall_hours"] == pytest.approx(8260.2 * 4000 / 1500 / 3600)
    # weak: 25,701 x 4,000 / 3,000 / 3,600 / 32 replicas = 0.297 h of throughput, but 1,024 calls in flight at 60 s
    # each take 25,701 x 60 / 1,024 / 3,600 = 0.418 h; busy 0.418 / 6.119 = 7% of the run
    assert weak["hours"] == pytest.approx(25701 * 60 / 1024 / 3600)
    assert weak["busy_share"] == pytest.approx(weak["hours"] / fleet["wall_hours"])
    # ceil(32 x 0.297 / 6.119) = ceil(1.56) = 2 replicas keep pace with the strong solver
    assert weak["replicas_busy"] == 2
    assert any("2 of its 32 replicas" in line for line in fleet["advice"])
    # 92,323 calls in 6.119 h = 4.2 calls/s: far below one orchestrator's 275
    assert fleet["calls_per_s"] == pytest.approx(plan["totals"]["calls"] / (fleet["wall_hours"] * 3600))
    assert fleet["shards"] == 1
    # In flight (Little's law): weak 1.17 calls/s x 60 s = 70, strong 0.375 x 90 s = 34; about 104 documents at one
    # call each (solver_wave 1), more than the default 16 documents in flight
    assert fleet["calls_in_flight"] == pytest.approx(weak["in_flight"] + strong["in_flight"])
    assert strong["in_flight"] == pytest.approx(8260.2 / (fleet["wall_hours"] * 3600) * 90)
    assert fleet["documents_in_flight"] == math.ceil(fleet["calls_in_flight"])
    assert any("raise generate.max_docs_in_flight from 16" in line for line in fleet["advice"])


def test_a_capped_bottleneck_and_a_slow_orchestrator_are_named():
    plan = make_plan(composed(*PAPER_FLEET, "models.roles.strong_solver.max_concurrency=16"))
    fleet = plan["fleet"]
    # 16 calls in flight at 90 s: 8,260.2 x 90 / 16 / 3,600 = 12.9 h, longer than the replica's 6.1 h
    assert fleet["wall_hours"] == pytest.approx(8260.2 * 90 / 16 / 3600) and fleet["wall_bound"] == "bottleneck"
    # Full throughput is 8,260.2 calls / 6.119 h = 0.375 calls/s, x 90 s = 34 calls in flight
    assert any("max_concurrency to 34" in line for line in fleet["advice"])
    slow = make_plan(composed(*PAPER_FLEET, "models.roles.strong_solver.max_concurrency=16",
                              "plan.orchestrator_calls_per_s=1"))["fleet"]
    # 92,323 calls at 1 call/s take 25.6 h, longer than the endpoints' 12.9 h: the orchestrator sets the pace, and
    # the endpoints' pace (1.99 calls/s) needs 2 processes
    assert slow["wall_bound"] == "orchestrator"
    assert slow["wall_hours"] == pytest.approx(plan["totals"]["calls"] / 3600)
    assert slow["shards"] == 2 and any("corpus.num_shards=2" in line for line in slow["advice"])
    sharded = make_plan(composed(*PAPER_FLEET, "models.roles.strong_solver.max_concurrency=16",
                                 "plan.orchestrator_calls_per_s=1", "corpus.num_shards=2"))["fleet"]
    assert sharded["wall_bound"] == "bottleneck" and not any("num_shards=" in line for line in sharded["advice"])


def test_the_documents_own_chains_bound_the_wall_time():
    latencies = {"challenger": 50, "quality_verifier": 10, "weak_solver": 80, "strong_solver": 80, "judge": 16,
                 "feedback": 4}
    plan = make_plan(composed("experiment=paper_cs", "generate.max_docs_in_flight=100",
                              *(f"plan.roles.{r}.latency_s={s}" for r, s in latencies.items())))
    docs = plan["fleet"]["documents"]
    # Rounds without queues: accepting 50 + 10 + 3 x (80 + 16) x 2 = 636 s; too easy 60 + 2 x 96 + 4 = 256 s; failed
    # on strong 60 + 3 x 96 + 2 x 96 + 4 = 544 s
    assert docs["round_s"] == {"accepting": 636, "too_easy": 256, "failed_on_strong": 544}
    # A mean document: 1 accepting round and 5.59 rejected ones, 80% too easy: 636 + 5.59 x (0.8 x 256 + 0.2 x 544)
    rejected = 0.8 * 256 + 0.2 * 544
    assert docs["mean_document_s"] == pytest.approx(636 + 5.59 * rejected)
    # The longest: 9 rejected rounds and the accepting one, 6 of them failing on strong (the 1 - 1/1,400 quantile of
    # Binomial(9, 0.2): the unluckiest of 1,400 documents); 1,400 documents 100 at a time
    assert docs["longest_document_s"] == pytest.approx(636 + 6 * 544 + 3 * 256)
    assert docs["hours"] == pytest.approx((1300 / 100 * docs["mean_document_s"] + docs["longest_document_s"]) / 3600)
    assert plan["fleet"]["wall_bound"] == "documents" and plan["fleet"]["wall_hours"] == docs["hours"]
    assert any("chains of calls set the pace" in line for line in plan["fleet"]["advice"])


def test_without_throughput_or_latency_the_plan_says_what_to_declare():
    plan = make_plan(composed("experiment=paper_cs"))
    assert plan["target"] == 1400 and plan["target_from"] == "generate.target_accepted"
    assert plan["totals"]["gpu_hours"] is None and plan["totals"]["cost"] is None
    assert "replica_tokens_per_s" in plan["fleet"]["advice"][0]


def test_cot_plans_one_shot_rounds_without_feedback():
    plan = make_plan(composed("experiment=paper_cs", "method=cot", "plan.target=100"))
    # 100 documents, one round each: 1 challenger, 1 QV, 3 + 3 solver samples and 6 judge calls per document
    assert calls(plan) == pytest.approx({"challenger": 100, "quality_verifier": 100, "weak_solver": 300,
                                         "strong_solver": 300, "judge": 600})


def test_the_papers_fleet_fits_its_h200_nodes():
    memory = make_plan(composed("experiment=paper_cs"))["memory"]
    weak, strong = memory["weak_solver"], memory["strong_solver"]
    # 4.66B x 2 bytes (bf16) = 9.32 GB on one H200: 141 x 0.9 = 126.9 GB usable, 117.58 GB left for KV cache; 32
    # replicas of one GPU fill four 8-GPU nodes
    assert (weak["checkpoint"], weak["weight_dtype"]) == ("Qwen/Qwen3.5-4B", "bf16")
    assert weak["weights_gb"] == pytest.approx(9.32)
    assert weak["usable_gb"] == pytest.approx(126.9) and weak["kv_cache_gb"] == pytest.approx(117.58)
    assert weak["fits"] and (weak["nodes_per_replica"], weak["nodes"]) == (1, 4)
    # 397B x 2 bytes = 794 GB on 8 H200s: 8 x 141 x 0.9 = 1,015.2 GB usable; one node
    assert strong["weights_gb"] == 794.0 and strong["usable_gb"] == pytest.approx(1015.2)
    assert strong["fits"] and strong["fixes"] == [] and (strong["nodes_per_replica"], strong["nodes"]) == (1, 1)
    # The judge runs on Kimi-K2.6's API: no size known, no GPU declared, no memory line
    assert "judge" not in memory


def test_the_397b_in_bf16_does_not_fit_an_h100_node_and_its_fp8_checkpoint_does():
    h100 = ("experiment=paper_cs", "plan.roles.strong_solver.gpu_type=H100-80GB")
    strong = make_plan(composed(*h100))["memory"]["strong_solver"]
    # 794 GB > 8 x 80 x 0.9 = 576 GB
    assert strong["usable_gb"] == pytest.approx(576.0) and not strong["fits"]
    assert strong["fixes"] == ["serve Qwen/Qwen3.5-397B-A17B-FP8 (397 GB)", "give it an H200-141GB node (8x141 GB)",
                               "2 nodes of 8 GPUs with pipeline parallel"]
    (line,) = [x for x in memory_lines({"strong_solver": strong}) if x.startswith("WARNING")]
    assert "needs 794 GB of weights, more than the 576 GB usable on 8xH100-80GB" in line
    # The FP8 checkpoint: 397 x 1 byte = 397 GB, 179 GB left for KV cache
    fp8 = make_plan(composed(*h100, "plan.roles.strong_solver.checkpoint=Qwen/Qwen3.5-397B-A17B-FP8"))
    strong = fp8["memory"]["strong_solver"]
    assert (strong["weight_dtype"], strong["weights_gb"], strong["fits"]) == ("fp8", 397.0, True)
    assert strong["kv_cache_gb"] == pytest.approx(179.0)
    assert not any(x.startswith("WARNING") for x in memory_lines(fp8["memory"]))


def test_declared_sizes_replace_the_tables():
    plan = make_plan(composed(
        "experiment=paper_cs", "plan.roles.strong_solver.gpu_type=null", "plan.roles.strong_solver.gpu_memory_gb=96",
        "plan.roles.strong_solver.gpus_per_node=4", "plan.roles.strong_solver.gpu_memory_utilization=0.95",
        "plan.roles.judge.checkpoint=org/judge-70b", "plan.roles.judge.params_b=70",
        "plan.roles.judge.weight_dtype=fp8", "plan.roles.feedback.gpu_type=A100-40GB"))
    memory = plan["memory"]
    strong, judge, feedback = memory["strong_solver"], memory["judge"], memory["feedback"]
    # 8 GPUs of a 4-GPU node: one replica spans 2 nodes (pipeline parallel); 8 x 96 x 0.95 = 729.6 GB < 794 GB.
    # 2 nodes of 4 x 96 x 0.95 = 364.8 GB each hold 794 GB in ceil(794 / 364.8) = 3
    assert strong["nodes_per_replica"] == 2 and strong["usable_gb"] == pytest.approx(729.6) and not strong["fits"]
    assert "3 nodes of 4 GPUs with pipeline parallel" in strong["fixes"]
    # 70B x 1 byte, no GPU declared: a figure, no verdict
    assert (judge["weights_gb"], judge["fits"]) == (70.0, None)
    # A GPU but a model of unknown size (feedback runs on kimi-k2.6): the line says what to set
    assert feedback["weights_gb"] is None
    lines = memory_lines(memory)
    assert any("set plan.roles.judge.gpu_type for a fit verdict" in x for x in lines)
    assert any("set plan.roles.feedback.params_b" in x for x in lines)
    # plan.json holds the same figures
    assert json.loads(json.dumps(plan))["memory"] == memory


def test_memory_keys_that_name_nothing_known_are_refused():
    with pytest.raises(ConfigError) as info:
        make_plan(composed("experiment=paper_cs", "plan.roles.strong_solver.gpu_type=H100",
                           "plan.roles.weak_solver.weight_dtype=bfloat16",
                           "plan.roles.weak_solver.gpu_memory_utilization=1.5"))
    text = str(info.value)
    assert "plan.roles.strong_solver.gpu_type ('H100') is not a known GPU (A100-40GB, A100-80GB, H100-80GB" in text
    assert "plan.roles.weak_solver.weight_dtype ('bfloat16') is not a known dtype" in text
    assert "plan.roles.weak_solver.gpu_memory_utilization (1.5) must lie in (0, 1]" in text


def write_pilot(folder: Path, **extra) -> Path:
    """A hand-written pilot: 10 accepted examples in 70 rounds."""
    folder.mkdir(parents=True, exist_ok=True)
    stats = {"method": "agentic", "domain": "cs", "accepted": 10, "rounds": 70, "mean_rounds_per_accepted": 6.0,
             "calls_saved_early_exit": 40, "wall_seconds_total": 360.0,
             "per_role": {"challenger": {"calls": 70, "prompt_tokens": 700_000, "completion_tokens": 140_000},
                          "quality_verifier": {"calls": 70, "prompt_tokens": 770_000, "completion_tokens": 35_000},
                          "weak_solver": {"calls": 200, "prompt_tokens": 160_000, "completion_tokens": 600_000},
                          "strong_solver": {"calls": 50, "prompt_tokens": 40_000, "completion_tokens": 250_000},
                          "judge": {"calls": 250, "prompt_tokens": 1_250_000, "completion_tokens": 150_000},
                          "feedback": {"calls": 60, "prompt_tokens": 120_000, "completion_tokens": 6_000}},
             **extra}
    (folder / "stats.json").write_text(json.dumps(stats))
    return folder


def test_a_pilot_scales_by_target_over_its_accepted_examples(tmp_path):
    cfg = composed("experiment=paper_cs", "plan.target=1300", f"plan.pilot={write_pilot(tmp_path / 'pilot')}",
                   "plan.roles.weak_solver.replica_tokens_per_s=3000")
    plan = make_plan(cfg, read_pilot(cfg))
    # 1,300 / 10 accepted = x130
    assert plan["source"] == "pilot" and plan["model"]["scale"] == 130
    assert calls(plan) == {"challenger": 70 * 130, "quality_verifier": 70 * 130, "weak_solver": 200 * 130,
                           "strong_solver": 50 * 130, "judge": 250 * 130, "feedback": 60 * 130}
    weak = plan["roles"]["weak_solver"]
    # 600,000 x 130 = 78M output tokens, 3,000 per call as measured; / 3,000 tokens/s / 3,600 = 7.22 GPU-hours
    assert weak["output_tokens"] == 78_000_000 and weak["output_per_call"] == 3000
    assert weak["gpu_hours"] == pytest.approx(78e6 / 3000 / 3600)
    # Rounds of every document (70 / 10 = 7), beside the accepted documents' mean (6.0); 360 s x 130 = 13 h
    assert plan["model"]["rounds_per_accepted_all_documents"] == 7.0
    assert plan["model"]["wall_hours_at_pilot_pace"] == pytest.approx(13.0)


@pytest.mark.parametrize("stats,phrase", [
    (None, "has no stats.json"),
    ({"accepted": 0}, "0 accepted examples"),
    ({"method": "cot"}, "method.name is 'cot' there and 'agentic' here"),
])
def test_a_pilot_that_cannot_be_scaled_is_refused(tmp_path, stats, phrase):
    pilot = tmp_path / "pilot"
    if stats is None:
        pilot.mkdir()
    else:
        write_pilot(pilot, **stats)
    with pytest.raises(InputError, match=phrase):
        read_pilot(composed("experiment=paper_cs", f"plan.pilot={pilot}"))


def test_the_plan_needs_no_endpoint_or_api_key_and_checks_its_own_keys():
    # models=paper names MOONSHOT_API_KEY and no URL: the planner calls nothing, so neither is required
    validate(composed("experiment=paper_cs"), env={})
    bad = composed("experiment=paper_cs", "plan.too_easy_share=1.5", "plan.rounds_per_accepted=0.5",
                   "plan.roles.strong_solver.replicas=0")
    # Set in code: on the command line Hydra itself refuses a new key of a typed dict
    bad.plan.tokens["jugde"] = PlanTokens(input=10, output=1)
    with pytest.raises(ConfigError) as info:
        validate(bad, env={})
    text = str(info.value)
    for line in ("plan.too_easy_share (1.5) must lie in [0, 1]", "plan.rounds_per_accepted (0.5) must be >= 1",
                 "plan.roles.strong_solver.replicas (0) must be an integer >= 1",
                 "plan.tokens.jugde ('jugde') is not a generate role"):
        assert line in text


def run_cli(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MOONSHOT_API_KEY"}
    return subprocess.run([sys.executable, "-m", "autodata.run", "stage=plan", f"hydra.run.dir={run_dir}",
                           *overrides], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)


def test_cli_plans_from_a_pilot_without_urls_or_keys(tmp_path):
    pilot = write_pilot(tmp_path / "pilot")
    proc = run_cli(tmp_path / "plan", "experiment=paper_cs", f"plan.pilot={pilot}", "plan.target=1300")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    plan = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert plan["source"] == "pilot" and plan["roles"]["judge"]["calls"] == 250 * 130
    assert "1,300 accepted examples" in out and "32,500" in out  # the judge's calls in the printed table


def test_cli_prints_the_memory_plan_and_warns_for_the_397b_on_h100(tmp_path):
    proc = run_cli(tmp_path / "h200", "experiment=paper_cs")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert ("memory strong_solver: Qwen/Qwen3.5-397B-A17B in bf16, 794 GB of weights on 1 replica(s) of "
            "8xH200-141GB") in out and "WARNING" not in out, out
    assert ("memory weak_solver: Qwen/Qwen3.5-4B in bf16, 9 GB of weights on 32 replica(s) of 1xH200-141GB "
            "(4 node(s) of 8") in out
    plan = json.loads((tmp_path / "h200" / "plan.json").read_text())
    assert plan["memory"]["strong_solver"]["fits"] is True

    proc = run_cli(tmp_path / "h100", "experiment=paper_cs", "plan.roles.strong_solver.gpu_type=H100-80GB")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert ("WARNING strong_solver: Qwen/Qwen3.5-397B-A17B in bf16 needs 794 GB of weights, more than the 576 GB "
            "usable on 8xH100-80GB at 0.9; serve Qwen/Qwen3.5-397B-A17B-FP8 (397 GB), or give it an H200-141GB node "
            "(8x141 GB), or 2 nodes of 8 GPUs with pipeline parallel") in out, out
    assert json.loads((tmp_path / "h100" / "plan.json").read_text())["memory"]["strong_solver"]["fits"] is False


def test_cli_without_a_target_says_how_to_give_one(tmp_path):
    proc = run_cli(tmp_path / "plan")  # the default cpu experiment sets no generate.target_accepted
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out and "set plan.target=1300" in out


def test_plan_tracking_and_hardware_doctests():
    import doctest

    import autodata.hardware
    import autodata.plan
    import autodata.tracking

    for module in (autodata.plan, autodata.tracking, autodata.hardware):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__
