"""``stage=plan``: what a generate run for N accepted examples costs, and the fleet that keeps it busy.

    python -m autodata.run stage=plan experiment=paper_cs                           # analytic model (6.59 rounds)
    python -m autodata.run stage=plan experiment=paper_cs plan.pilot=runs/pilot_cs  # scale a pilot run
    python -m autodata.run stage=plan experiment=paper_cs plan.target=1300 \
        plan.roles.weak_solver.replica_tokens_per_s=3000 plan.roles.weak_solver.replicas=32 \
        plan.roles.strong_solver.replica_tokens_per_s=1500 plan.roles.strong_solver.gpus_per_replica=8

Per role: calls, input and output tokens; GPU-hours where the role declares a replica's throughput
(``plan.roles.<role>.replica_tokens_per_s``, ``gpus_per_replica``); API cost where it declares prices
(``price_in_per_mtok``, ``price_out_per_mtok``). Then the fleet: which role is the bottleneck, how busy the others
are, how many calls must be in flight and how many orchestrator processes (``corpus.num_shards``) keep up. Prints
two tables and writes ``plan.json`` into the run dir. Calls no endpoint: it needs no URL or API key.

The target is ``plan.target``, else ``generate.target_accepted``. The figures per accepted example come from:

* a pilot (``plan.pilot=RUN_DIR``, a finished generate run of the same recipe): its stats.json ``per_role`` calls
  and tokens, scaled by target / its accepted count. Everything the loop does is in them (early exit, QV failures,
  documents that never yield an example, real token sizes), so a pilot beats the model below.
* the analytic model of the recipe, for A accepted examples (method=agentic)::

      R = A x plan.rounds_per_accepted     rounds (paper CS: 6.59 per accepted example)
      J = R - A                            rejected rounds (each example ends with one accepting round)
      E = plan.too_easy_share x J          too-easy rounds: the weak solver did too well, the strong one never runs
      S = R - E                            rounds that reach the strong solver
      H = J - E                            rounds that fail on the strong solver
      c = challengers per round, kw = generate.weak_samples, ks = generate.strong_samples
      kw' = weak samples a too-easy round draws, ks' = strong samples a round failing on strong draws: with
            generate.early_exit, the first wave after which the domain's acceptance policy calls the round failed
            (cs_paper, k = 3: 2 and 2); without it kw and ks

      challenger        c x R            (+ A extractor calls when the domain has an extractor: one per document)
      quality_verifier  c x R            (0 with generate.quality_verifier=false)
      weak_solver       kw x (A + H) + kw' x E   samples (accepting rows carry every sample)
      strong_solver     ks x A + ks' x H
      judge             weak + strong samples    (+ S loop-judge calls when the domain has a loop judge)
      feedback          J                one diagnosis per rejected round

  method=cot: one round per document, R = A x rounds_per_accepted (1.0 without a filter), both solvers in every
  round when method.score_solvers, no feedback. Tokens: calls x ``plan.tokens.<role>`` {input, output}.

  Simplifications (a pilot measures each): every round passes the structural checks and the QV (a round that
  fails them calls no solver and no feedback: over-counts); a failing solver's runs all score alike (1.0 for a
  too-easy weak side, 0 for a failing strong side), so early exit stops as soon as it can (a run of mixed scores
  stops later: under-counts); documents that end without an example are left out, since rounds_per_accepted
  counts the rounds of accepted documents as the paper's 6.59 does (under-counts: raise it for a corpus where many
  documents never yield); the loop judge runs in every round that reaches the strong solver (over-counts); every call of a role has the role's average size; solver calls are
  samples (with generate.solver_wave=w one request carries w of them, same tokens). The strong solver's skip in
  too-easy rounds is not early exit: the loop always skips it when the weak criterion fails, so the paper's 80% is
  the default and plan.too_easy_share=0 gives the upper bound.

The fleet arithmetic (roles without a declared throughput or latency are left out of it):

  1. hours a role needs = the larger of output tokens / (replicas x replica_tokens_per_s) (its replicas' throughput)
     and calls x latency_s / max_concurrency (its endpoint's concurrency cap, Little's law), / 3600.
  2. the run takes as long as its slowest role, the bottleneck: W = the largest of those hours.
  3. a role's busy share = its hours / W; replicas that stay busy at that pace = ceil(replicas x throughput hours / W).
  4. calls in flight that keep a role's replicas busy = call rate at full throughput x latency_s; a max_concurrency
     below it leaves replicas idle.
  5. the orchestrator: calls / W per second, shards = ceil(that / plan.orchestrator_calls_per_s); documents in
     flight = the calls in flight at pace W / generate.solver_wave, since a document's steps run one after another,
     each with about solver_wave calls out (generate.max_docs_in_flight below it starves the endpoints).
  6. the wall time is the longest of three bounds: W (the bottleneck role); the orchestrator's CPU, calls /
     (plan.orchestrator_calls_per_s x corpus.num_shards); and the documents' own chains (``document_hours``: with
     D = max_docs_in_flight x shards documents in flight, (N - D) / D x the mean document's chain of call latencies
     + the longest document's chain: max_rounds rounds, as many failing on strong as the unluckiest of N documents
     draws). ``wall_bound`` names the one that sets the pace; busy shares
     are of that wall time. benchmarks/bench_paper_scale.py checks the plan against a simulated arm.

The memory plan, per role whose checkpoint size or GPU is known (``plan.roles.<role>.checkpoint``, ``params_b``,
``weight_dtype``, ``gpu_type`` or ``gpu_memory_gb``, ``gpus_per_node``, ``gpu_memory_utilization``; the tables are
autodata/hardware.py's): weights = parameters x bytes per parameter (bf16 2, fp8 1), against gpus_per_replica x
memory per GPU x gpu_memory_utilization, the rest of which is KV cache. A role whose weights do not fit gets a
WARNING line with the ways out (the FP8 checkpoint, a node of larger GPUs, pipeline parallel over nodes).
slurm/serve_node.sh runs the same check before it starts vLLM.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from autodata.config import ROLES, PlanRoleConfig, RootConfig, endpoint_for
from autodata.domains import DOMAINS, domain_class
from autodata.hardware import DTYPE_BYTES, GPU_MEMORY_GB, Fit, default_dtype, fixes, known_params_b, weights_gb
from autodata.rundir import input_conflicts, write_json_atomic
from autodata.tracking import LOGGERS
from autodata.validation import ConfigError, InputError, Problem, methods_of, require_choice, require_positive

log = logging.getLogger(__name__)

# plan.rounds_per_accepted when null: the paper's CS agentic loop (mean rounds per accepted example) and a one-shot
# method's single round
PAPER_CS_ROUNDS_PER_ACCEPTED = 6.59
COT_ROUNDS_PER_ACCEPTED = 1.0


@dataclass
class RoleUse:
    calls: float = 0.0
    input_tokens: float = 0.0
    output_tokens: float = 0.0


def target_of(cfg: RootConfig) -> tuple[int, str]:
    """The number of accepted examples to plan for and the key it came from."""
    if cfg.plan.target is not None:
        return cfg.plan.target, "plan.target"
    if cfg.generate.target_accepted is not None:
        return cfg.generate.target_accepted, "generate.target_accepted"
    raise InputError(
        f"stage=plan needs a number of accepted examples, but plan.target and generate.target_accepted are both "
        f"null (experiment {cfg.experiment.name or '(none)'}); set plan.target=1300, or pick an experiment that "
        "sets generate.target_accepted (experiment=paper_cs)")


def analytic_usage(cfg: RootConfig, target: float) -> tuple[dict[str, RoleUse], dict[str, Any]]:
    """Calls and tokens per role under the module docstring's call model, and the model's numbers.

    >>> from autodata.config import RootConfig
    >>> use, model = analytic_usage(RootConfig(stage="plan"), 100)
    >>> model["rounds"], round(use["strong_solver"].calls, 1), use["feedback"].calls  # 3 x 100 + 2 x 0.2 x 559
    (659.0, 523.6, 559.0)
    """
    gen, method = cfg.generate, cfg.method
    domain = domain_class(cfg.domain)
    cot = method.name == "cot"
    per_accepted = cfg.plan.rounds_per_accepted
    if per_accepted is None:
        per_accepted = COT_ROUNDS_PER_ACCEPTED if cot else PAPER_CS_ROUNDS_PER_ACCEPTED
    rounds = target * per_accepted
    challengers = 1 if cot else (gen.challengers_per_round or domain.challengers_per_round)
    kw, ks = gen.weak_samples, gen.strong_samples
    # Samples a solver draws in a round it fails (early exit stops once the policy's verdict is certain)
    kw_easy, ks_fail = early_exit_samples(cfg)
    if cot:
        rejected, too_easy = 0.0, 0.0
        solved = rounds if method.score_solvers else 0.0
        qv = rounds if (gen.quality_verifier or method.qv_filter) else 0.0
        documents = rounds
        weak, strong = kw * solved, ks * solved
    else:
        rejected = rounds - target
        too_easy = cfg.plan.too_easy_share * rejected
        solved = rounds
        qv = challengers * rounds if gen.quality_verifier else 0.0
        documents = float(target)
        # Accepting rounds draw every sample of both solvers; too-easy rounds stop the weak solver early and skip
        # the strong one; the other rejected rounds (failed on strong) draw every weak sample and stop the strong
        # solver early
        too_hard = rejected - too_easy
        weak = kw * (target + too_hard) + kw_easy * too_easy
        strong = ks * target + ks_fail * too_hard
    strong_rounds = solved - too_easy
    calls = {
        "challenger": challengers * rounds + (documents if domain.has_extractor else 0.0),
        "quality_verifier": qv,
        "weak_solver": weak,
        "strong_solver": strong,
        "judge": weak + strong + (strong_rounds if domain.has_loop_judge else 0.0),
        "feedback": rejected,
    }
    use = {}
    for role, n in calls.items():
        size = cfg.plan.tokens.get(role)
        use[role] = RoleUse(n, n * (size.input if size else 0), n * (size.output if size else 0))
    model = {"method": method.name, "domain": cfg.domain.name, "rounds_per_accepted": per_accepted,
             "documents": documents,
             "rounds": rounds, "rejected_rounds": rejected, "too_easy_rounds": too_easy,
             "rounds_reaching_strong_solver": strong_rounds, "challengers_per_round": challengers,
             "weak_samples": gen.weak_samples, "strong_samples": gen.strong_samples,
             "weak_samples_too_easy": kw_easy if not cot else None,
             "strong_samples_failed": ks_fail if not cot else None,
             "quality_verifier": gen.quality_verifier, "extractor": domain.has_extractor,
             "loop_judge": domain.has_loop_judge, "too_easy_share": cfg.plan.too_easy_share if not cot else None}
    return use, model


def early_exit_samples(cfg: RootConfig) -> tuple[int, int]:
    """Samples drawn in a round a solver fails: the weak solver in a too-easy round (each run scores 1.0) and the
    strong solver in a round that fails on it (each run scores 0.0, the weak ones too), asked of the domain's
    acceptance policy as the loop asks it after each wave of generate.solver_wave samples. Without
    generate.early_exit every sample is drawn.

    >>> from autodata.config import RootConfig
    >>> early_exit_samples(RootConfig(stage="plan"))   # cs_paper, k = 3: two runs of 1.0 fail the weak side, two of 0 the strong
    (2, 2)
    """
    from autodata.acceptance import Status, build_policy

    gen = cfg.generate
    if not gen.early_exit:
        return gen.weak_samples, gen.strong_samples
    policy = build_policy(cfg.domain.acceptance)

    def drawn(status_of: Any, score: float, k: int) -> int:
        n = 0
        while n < k:
            n = min(n + gen.solver_wave, k)
            if status_of([score] * n, k) is Status.FAIL:
                return n
        return k

    weak = drawn(policy.weak_status, 1.0, gen.weak_samples)
    strong = drawn(lambda scores, k: policy.strong_status(scores, k, weak_mean=0.0), 0.0, gen.strong_samples)
    return weak, strong


def pilot_usage(stats: dict[str, Any], target: float) -> tuple[dict[str, RoleUse], dict[str, Any]]:
    """A pilot's per-role calls and tokens scaled by target / its accepted examples.

    >>> stats = {"accepted": 10, "rounds": 70, "per_role": {"judge": {"calls": 400, "prompt_tokens": 2000,
    ...          "completion_tokens": 800}, "feedback": {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0}}}
    >>> use, _ = pilot_usage(stats, 100)
    >>> use
    {'judge': RoleUse(calls=4000.0, input_tokens=20000.0, output_tokens=8000.0)}
    """
    scale = target / stats["accepted"]
    use = {role: RoleUse(t.get("calls", 0) * scale, t.get("prompt_tokens", 0) * scale,
                         t.get("completion_tokens", 0) * scale)
           for role, t in stats["per_role"].items() if t.get("calls")}
    wall = stats.get("wall_seconds_total")
    model = {"accepted": stats["accepted"], "scale": scale, "rounds": stats.get("rounds"),
             "rounds_per_accepted_all_documents": stats["rounds"] / stats["accepted"] if stats.get("rounds") else None,
             "mean_rounds_per_accepted": stats.get("mean_rounds_per_accepted"),
             "calls_saved_early_exit": stats.get("calls_saved_early_exit"),
             "failure_reason_shares": stats.get("failure_reason_shares"),
             # The pilot's own pace, valid only on the same fleet
             "wall_hours_at_pilot_pace": wall * scale / 3600 if wall else None}
    return use, model


def read_pilot(cfg: RootConfig) -> dict[str, Any]:
    """The pilot's stats.json, refused when it cannot be scaled or was made by another recipe (check_inputs)."""
    run_dir = Path(cfg.plan.pilot or "")
    path = run_dir / "stats.json"
    if not path.is_file():
        raise InputError(f"plan.pilot ({cfg.plan.pilot}) has no stats.json: expected a finished stage=generate run "
                         f"dir; run `python -m autodata.run stage=generate experiment={cfg.experiment.name or 'cpu'} "
                         f"generate.target_accepted=50 hydra.run.dir={run_dir}` first, or drop plan.pilot for the "
                         "analytic model")
    try:
        stats = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"plan.pilot: {path} is not JSON ({err}); rerun the pilot's generate command to rewrite "
                         "it") from None
    if not isinstance(stats.get("per_role"), dict) or not isinstance(stats.get("accepted"), int):
        raise InputError(f"plan.pilot: {path} has no per_role calls or accepted count (expected a generate run's "
                         "stats.json); point plan.pilot at a generate run dir")
    if stats["accepted"] < 1:
        raise InputError(f"plan.pilot: {path} records 0 accepted examples, so nothing scales to a target; run the "
                         "pilot longer (a larger generate.target_accepted or corpus.limit) or drop plan.pilot")
    conflicts = input_conflicts(run_dir, cfg)
    if cfg.check_inputs and stats.get("method") not in (None, cfg.method.name):
        conflicts.insert(0, f"method.name is {stats['method']!r} there and {cfg.method.name!r} here")
    if conflicts:
        raise InputError(f"plan.pilot ({run_dir}) was made by another recipe: {'; '.join(conflicts)}; plan with a "
                         "pilot of this recipe, or set check_inputs=false to scale it anyway")
    return stats


def role_costs(use: RoleUse, rc: Optional[PlanRoleConfig]) -> dict[str, float]:
    """GPU-hours from a replica's throughput, API cost from prices; each only when declared.

    >>> role_costs(RoleUse(10, 2e6, 36e6), PlanRoleConfig(replica_tokens_per_s=1000, replicas=4, gpus_per_replica=8,
    ...            price_in_per_mtok=1.0, price_out_per_mtok=2.0))
    {'replica_hours': 10.0, 'gpu_hours': 80.0, 'throughput_hours': 2.5, 'cost': 74.0}
    """
    out: dict[str, float] = {}
    if rc is None:
        return out
    if rc.replica_tokens_per_s:
        replica_hours = use.output_tokens / rc.replica_tokens_per_s / 3600
        out.update(replica_hours=replica_hours, gpu_hours=replica_hours * rc.gpus_per_replica,
                   throughput_hours=replica_hours / rc.replicas)
    if rc.price_in_per_mtok is not None or rc.price_out_per_mtok is not None:
        out["cost"] = (use.input_tokens / 1e6 * (rc.price_in_per_mtok or 0.0)
                       + use.output_tokens / 1e6 * (rc.price_out_per_mtok or 0.0))
    return out


def round_seconds(cfg: RootConfig, model: dict[str, Any]) -> Optional[dict[str, float]]:
    """Seconds of one round of each kind when its calls meet no queue (a document's calls run one after another; a
    wave's judge calls at once): {"accepting", "too_easy", "failed_on_strong"} (cot: {"accepting"}), or None when a
    role on the path has no plan.roles.<role>.latency_s.

    >>> from autodata.config import RootConfig
    >>> cfg = RootConfig(stage="plan")
    >>> for role, s in dict(challenger=50, quality_verifier=10, weak_solver=80, strong_solver=80, judge=16,
    ...                     feedback=4).items():
    ...     cfg.plan.roles[role].latency_s = s
    >>> round_seconds(cfg, analytic_usage(cfg, 100)[1])   # 60 + 3 x 96 + 3 x 96; 60 + 2 x 96 + 4; ...
    {'accepting': 636.0, 'too_easy': 256.0, 'failed_on_strong': 544.0}
    """
    gen = cfg.generate
    latency = {r: float(rc.latency_s) for r, rc in cfg.plan.roles.items() if rc.latency_s}
    needed = ["challenger", "weak_solver", "strong_solver", "judge"]
    needed += ["quality_verifier"] if model.get("quality_verifier") else []
    needed += ["feedback"] if model["method"] != "cot" else []
    if any(r not in latency for r in needed):
        return None
    head = latency["challenger"] + (latency["quality_verifier"] if model.get("quality_verifier") else 0.0)

    def side(role: str, samples: float) -> float:
        return math.ceil(samples / gen.solver_wave) * (latency[role] + latency["judge"])

    kw, ks = gen.weak_samples, gen.strong_samples
    if model["method"] == "cot":
        # Both solvers at once
        return {"accepting": head + max(side("weak_solver", kw), side("strong_solver", ks))}
    return {"accepting": head + side("weak_solver", kw) + side("strong_solver", ks),
            "too_easy": head + side("weak_solver", model["weak_samples_too_easy"]) + latency["feedback"],
            "failed_on_strong": head + side("weak_solver", kw) + side("strong_solver", model["strong_samples_failed"])
            + latency["feedback"]}


def binomial_quantile(n: int, p: float, q: float) -> int:
    """The smallest x with P(X <= x) >= q for X ~ Binomial(n, p).

    >>> binomial_quantile(9, 0.2, 0.5), binomial_quantile(9, 0.2, 1 - 1 / 1400), binomial_quantile(9, 0.0, 0.99)
    (2, 6, 0)
    """
    total = 0.0
    for x in range(n + 1):
        total += math.comb(n, x) * p ** x * (1 - p) ** (n - x)
        if total >= q - 1e-12:
            return x
    return n


def document_hours(cfg: RootConfig, model: dict[str, Any], documents: float) -> Optional[dict[str, float]]:
    """How long the documents themselves take at the plan's latencies, queues aside: a document's rounds run one
    after another, generate.max_docs_in_flight per process (corpus.num_shards processes) at once, so documents
    finish at in-flight / mean chain per second, and the last to finish is the longest: generate.max_rounds rounds,
    as many of them failing on strong as the unluckiest of the documents draws. The wall time is at least
    ``hours``; queues at a busy role add to it."""
    rounds = round_seconds(cfg, model)
    if rounds is None or documents <= 0:
        return None
    per_doc = model["rounds"] / documents
    rejected = model["rejected_rounds"] / documents if model["method"] != "cot" else 0.0
    easy = model["too_easy_rounds"] / documents if model["method"] != "cot" else 0.0
    hard = rejected - easy
    mean = rounds["accepting"] * (per_doc - rejected) + rounds.get("too_easy", 0.0) * easy \
        + rounds.get("failed_on_strong", 0.0) * hard
    longest = mean
    if model["method"] != "cot" and rejected:
        # The longest of N documents: generate.max_rounds rounds whose rejected ones fail on strong as often as the
        # most unlucky of N documents sees (binomial draws at the plan's share of such rounds)
        n = cfg.generate.max_rounds - 1
        hard_rounds = binomial_quantile(n, hard / rejected, 1.0 - 1.0 / max(documents, 1.0))
        longest = max(mean, rounds["accepting"] + hard_rounds * rounds["failed_on_strong"]
                      + (n - hard_rounds) * rounds["too_easy"])
    in_flight = min(documents, cfg.generate.max_docs_in_flight * cfg.corpus.num_shards)
    hours = (max(0.0, documents - in_flight) / in_flight * mean + longest) / 3600
    return {"hours": hours, "mean_document_s": mean, "longest_document_s": longest, "documents_in_flight": in_flight,
            "round_s": rounds}


def fleet(cfg: RootConfig, use: dict[str, RoleUse], roles: dict[str, dict[str, Any]],
          model: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Steps 1-6 of the module docstring; fills each role's hours, busy share and in-flight needs in ``roles``."""
    advice: list[str] = []
    for role, row in roles.items():
        rc = cfg.plan.roles.get(role)
        latency = rc.latency_s if rc else None
        concurrency = endpoint_for(cfg.models, role).max_concurrency
        row["max_concurrency"] = concurrency
        bounds = [row["throughput_hours"]] if "throughput_hours" in row else []
        if latency and concurrency and concurrency > 0:
            row["concurrency_hours"] = use[role].calls * latency / concurrency / 3600
            bounds.append(row["concurrency_hours"])
            if "throughput_hours" in row and row["throughput_hours"] > 0:
                full_rate = use[role].calls / (row["throughput_hours"] * 3600)
                row["in_flight_to_fill_replicas"] = full_rate * latency
        if bounds:
            row["hours"] = max(bounds)
    timed = {role: row["hours"] for role, row in roles.items() if "hours" in row}
    if not timed or max(timed.values()) <= 0:
        return {"advice": ["declare plan.roles.<role>.replica_tokens_per_s (and replicas) or latency_s to size the "
                           "fleet and the run's wall time"]}
    bottleneck = max(timed, key=timed.__getitem__)
    top = roles[bottleneck]
    # Step 6: the wall time is the longest of the bottleneck role's hours, the orchestrator's CPU and the documents'
    # own chains
    calls_total = sum(u.calls for u in use.values())
    bounds = {"bottleneck": timed[bottleneck],
              "orchestrator": calls_total / (cfg.plan.orchestrator_calls_per_s * cfg.corpus.num_shards) / 3600}
    docs = document_hours(cfg, model, model.get("documents", 0.0)) if model else None
    if docs is not None:
        bounds["documents"] = docs["hours"]
    bound = max(bounds, key=bounds.__getitem__)
    wall = bounds[bound]
    if top.get("concurrency_hours", 0.0) > top.get("throughput_hours", math.inf):
        # The bottleneck waits on its own request cap, not on its replicas
        need = math.ceil(top["in_flight_to_fill_replicas"])
        advice.append(f"{bottleneck} (the bottleneck) waits on its max_concurrency {top['max_concurrency']}, not its "
                      f"replicas (calls/s at full throughput x latency_s = {need} calls in flight); raise "
                      f"models.roles.{bottleneck}.max_concurrency to {need}")
    in_flight = 0.0
    for role, row in roles.items():
        rate = use[role].calls / (wall * 3600)
        row["calls_per_s"] = rate
        if "hours" in row:
            row["busy_share"] = row["hours"] / wall
        if "throughput_hours" in row:
            row["replicas_busy"] = max(1, math.ceil(cfg.plan.roles[role].replicas * row["throughput_hours"] / wall))
        rc = cfg.plan.roles.get(role)
        if rc is not None and rc.latency_s:
            row["in_flight"] = rate * rc.latency_s
            in_flight += row["in_flight"]
    calls_per_s = sum(u.calls for u in use.values()) / (wall * 3600)
    # Processes that keep up with the endpoints: the call rate at the bottleneck role's pace over one's rate
    shards = max(1, math.ceil(calls_total / (timed[bottleneck] * 3600) / cfg.plan.orchestrator_calls_per_s))
    documents = math.ceil(in_flight / cfg.generate.solver_wave) if in_flight else None
    per_shard = math.ceil(documents / shards) if documents else None
    for role, row in roles.items():
        replicas = cfg.plan.roles[role].replicas if role in cfg.plan.roles else 1
        # The bottleneck's idle replicas (a concurrency cap) are the advice above
        if role != bottleneck and row.get("replicas_busy", replicas) < replicas:
            advice.append(f"{role}: busy {row['busy_share']:.0%} of the run; {row['replicas_busy']} of its {replicas} "
                          f"replicas would keep pace with the bottleneck ({bottleneck})")
    if shards > cfg.corpus.num_shards:
        advice.append(f"{calls_total / (timed[bottleneck] * 3600):,.0f} calls/s exceed one orchestrator's {cfg.plan.orchestrator_calls_per_s:,.0f}: "
                      f"run corpus.num_shards={shards} generate processes")
    if per_shard and per_shard > cfg.generate.max_docs_in_flight:
        advice.append(f"keeping {in_flight:,.0f} calls in flight needs about {per_shard} documents in flight per "
                      f"process; raise generate.max_docs_in_flight from {cfg.generate.max_docs_in_flight}")
    missing = [r for r in roles if not (cfg.plan.roles.get(r) and cfg.plan.roles[r].latency_s)]
    if missing:
        advice.append(f"calls in flight leave out {', '.join(missing)} (no plan.roles.<role>.latency_s)")
    if bound == "orchestrator":
        advice.append(f"one orchestrator's {cfg.plan.orchestrator_calls_per_s:,.0f} calls/s (plan.orchestrator_calls_per_s) "
                      f"x corpus.num_shards={cfg.corpus.num_shards} set the pace, not the endpoints")
    elif bound == "documents":
        advice.append(f"the documents' own chains of calls set the pace ({docs['longest_document_s'] / 3600:,.2f} h "
                      f"for the longest, {docs['documents_in_flight']:,.0f} in flight), not the endpoints: more documents "
                      "in flight (generate.max_docs_in_flight, corpus.num_shards), a larger generate.solver_wave or "
                      "more challengers per round shorten it")
    return {"wall_hours": wall, "wall_bound": bound, "bound_hours": bounds, "documents": docs,
            "bottleneck": bottleneck, "calls_per_s": calls_per_s,
            "orchestrator_calls_per_s": cfg.plan.orchestrator_calls_per_s, "shards": shards,
            "calls_in_flight": in_flight, "documents_in_flight": documents, "documents_in_flight_per_shard": per_shard,
            "max_docs_in_flight": cfg.generate.max_docs_in_flight, "advice": advice}


def memory_problems(cfg: RootConfig) -> list[Problem]:
    """The memory plan's keys that name nothing known or hold impossible values."""
    problems: list[Problem] = []
    for role, rc in cfg.plan.roles.items():
        prefix = f"plan.roles.{role}"
        if rc.gpu_type is not None and rc.gpu_type not in GPU_MEMORY_GB:
            problems.append(Problem(f"{prefix}.gpu_type", rc.gpu_type,
                                    f"is not a known GPU ({', '.join(GPU_MEMORY_GB)})",
                                    f"pick one, or set {prefix}.gpu_memory_gb to one GPU's memory in GB"))
        if rc.weight_dtype is not None and rc.weight_dtype not in DTYPE_BYTES:
            problems.append(Problem(f"{prefix}.weight_dtype", rc.weight_dtype,
                                    f"is not a known dtype ({', '.join(DTYPE_BYTES)})", "pick one, or null"))
        for key in ("params_b", "gpu_memory_gb"):
            value = getattr(rc, key)
            if value is not None and not value > 0:
                problems.append(Problem(f"{prefix}.{key}", value, "must be > 0", "set it, or null"))
        if not rc.gpus_per_node >= 1:
            problems.append(Problem(f"{prefix}.gpus_per_node", rc.gpus_per_node, "must be an integer >= 1",
                                    "set the GPUs of one node (8 on most clusters)"))
        if not 0 < rc.gpu_memory_utilization <= 1:
            problems.append(Problem(f"{prefix}.gpu_memory_utilization", rc.gpu_memory_utilization,
                                    "must lie in (0, 1] (a share of each GPU's memory)", "set 0.9, vLLM's default"))
    return problems


def memory_plan(cfg: RootConfig) -> dict[str, dict[str, Any]]:
    """Per role whose checkpoint size or GPU is known: its weights against the GPUs one replica is given.

    >>> from autodata.config import RootConfig
    >>> cfg = RootConfig(stage="plan")
    >>> cfg.plan.roles["strong_solver"] = PlanRoleConfig(checkpoint="Qwen/Qwen3.5-397B-A17B", gpus_per_replica=8,
    ...                                                  gpu_type="H100-80GB")
    >>> row = memory_plan(cfg)["strong_solver"]
    >>> row["weights_gb"], row["usable_gb"], row["fits"], row["nodes_per_replica"]   # 397 x 2; 8 x 80 x 0.9
    (794.0, 576.0, False, 1)
    """
    problems = memory_problems(cfg)
    if problems:
        raise ConfigError(problems)
    out: dict[str, dict[str, Any]] = {}
    for role, rc in cfg.plan.roles.items():
        checkpoint = rc.checkpoint or endpoint_for(cfg.models, role).model or ""
        params = rc.params_b if rc.params_b is not None else known_params_b(checkpoint)
        gpu_gb = rc.gpu_memory_gb if rc.gpu_memory_gb is not None else GPU_MEMORY_GB.get(rc.gpu_type or "")
        if params is None and gpu_gb is None:
            continue
        dtype = rc.weight_dtype or default_dtype(checkpoint)
        per_node = rc.gpus_per_node // rc.gpus_per_replica
        row: dict[str, Any] = {
            "checkpoint": checkpoint, "params_b": params, "weight_dtype": dtype,
            "weights_gb": weights_gb(params, dtype) if params is not None else None,
            "gpu_type": rc.gpu_type, "gpu_memory_gb": gpu_gb, "gpus_per_replica": rc.gpus_per_replica,
            "gpus_per_node": rc.gpus_per_node, "gpu_memory_utilization": rc.gpu_memory_utilization,
            "replicas": rc.replicas, "nodes_per_replica": math.ceil(rc.gpus_per_replica / rc.gpus_per_node),
            # Replicas smaller than a node share nodes; larger ones take whole nodes each
            "nodes": math.ceil(rc.replicas / per_node) if per_node else
            rc.replicas * math.ceil(rc.gpus_per_replica / rc.gpus_per_node),
            "usable_gb": None, "kv_cache_gb": None, "fits": None, "fixes": []}
        if params is not None and gpu_gb is not None:
            fit = Fit(row["weights_gb"], gpus=rc.gpus_per_replica, gpu_memory_gb=gpu_gb,
                      utilization=rc.gpu_memory_utilization)
            row.update(usable_gb=fit.usable_gb, kv_cache_gb=fit.kv_cache_gb, fits=fit.fits,
                       fixes=[] if fit.fits else fixes(checkpoint, dtype, fit, rc.gpus_per_node))
        out[role] = row
    return out


def memory_lines(memory: dict[str, dict[str, Any]]) -> list[str]:
    """One line per role of the memory plan; a role whose weights do not fit opens with WARNING and says the fix."""
    lines = []
    for role, m in memory.items():
        gpu = m["gpu_type"] or (f"{m['gpu_memory_gb']:g}GB" if m["gpu_memory_gb"] else "GPU")
        given = (f"{m['replicas']} replica(s) of {m['gpus_per_replica']}x{gpu} "
                 f"({m['nodes']} node(s) of {m['gpus_per_node']}, {m['nodes_per_replica']} per replica)")
        if m["weights_gb"] is None:
            lines.append(f"memory {role}: {m['checkpoint'] or '(no model)'} on {given}: parameter count unknown; set "
                         f"plan.roles.{role}.params_b for a fit verdict")
        elif m["fits"] is None:
            lines.append(f"memory {role}: {m['checkpoint']} in {m['weight_dtype']}, {m['weights_gb']:,.0f} GB of "
                         f"weights on {given}; set plan.roles.{role}.gpu_type for a fit verdict")
        elif m["fits"]:
            lines.append(f"memory {role}: {m['checkpoint']} in {m['weight_dtype']}, {m['weights_gb']:,.0f} GB of "
                         f"weights on {given}: fits in {m['usable_gb']:,.0f} GB usable at "
                         f"{m['gpu_memory_utilization']:g}, {m['kv_cache_gb']:,.0f} GB left for KV cache")
        else:
            lines.append(f"WARNING {role}: {m['checkpoint']} in {m['weight_dtype']} needs {m['weights_gb']:,.0f} GB "
                         f"of weights, more than the {m['usable_gb']:,.0f} GB usable on {m['gpus_per_replica']}x{gpu} "
                         f"at {m['gpu_memory_utilization']:g}; "
                         f"{', or '.join(m['fixes']) or 'serve a smaller or quantized checkpoint'} "
                         f"(plan.roles.{role}.checkpoint, gpu_type, gpus_per_replica)")
    return lines


def make_plan(cfg: RootConfig, pilot_stats: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The whole plan as plain data (what plan.json holds); pure: the pilot's stats are passed in."""
    target, target_from = target_of(cfg)
    if pilot_stats is not None:
        use, model = pilot_usage(pilot_stats, target)
    else:
        use, model = analytic_usage(cfg, target)
    order = [r for r in ROLES if r in use] + sorted(r for r in use if r not in ROLES)
    use = {r: use[r] for r in order if use[r].calls > 0}
    roles: dict[str, dict[str, Any]] = {}
    for role, u in use.items():
        roles[role] = {"calls": u.calls, "input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
                       "input_per_call": u.input_tokens / u.calls, "output_per_call": u.output_tokens / u.calls,
                       **role_costs(u, cfg.plan.roles.get(role))}
    totals: dict[str, Any] = {key: sum(u.__dict__[key] for u in use.values())
                              for key in ("calls", "input_tokens", "output_tokens")}
    for key in ("gpu_hours", "cost"):
        priced = [row[key] for row in roles.values() if key in row]
        totals[key] = sum(priced) if priced else None
    return {"source": "pilot" if pilot_stats is not None else "analytic", "pilot": cfg.plan.pilot,
            "experiment": cfg.experiment.name, "target": target, "target_from": target_from, "model": model,
            "roles": roles, "totals": totals, "fleet": fleet(cfg, use, roles, model if pilot_stats is None else None),
            "memory": memory_plan(cfg)}


def _n(value: Optional[float], digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _tokens(value: float) -> str:
    return f"{value / 1e6:,.1f}M" if value >= 1e5 else f"{value:,.0f}"


def print_plan(plan: dict[str, Any], run_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        # A log file or a pipe: wide enough that role names and numbers are not wrapped
        console = Console(width=120)
    source = f"pilot {plan['pilot']} x {plan['model']['scale']:.2f}" if plan["source"] == "pilot" else (
        f"analytic model, {plan['model']['rounds_per_accepted']:g} rounds per accepted example")
    usage = Table(title=f"plan: {plan['target']:,} accepted examples ({plan['target_from']}); {source}")
    for name in ("role", "calls", "input tok", "output tok", "tok/call in/out", "GPU-h", "cost"):
        usage.add_column(name, justify="left" if name == "role" else "right")
    for role, r in plan["roles"].items():
        usage.add_row(role, _n(r["calls"]), _tokens(r["input_tokens"]), _tokens(r["output_tokens"]),
                      f"{r['input_per_call']:,.0f} / {r['output_per_call']:,.0f}", _n(r.get("gpu_hours"), 1),
                      _n(r.get("cost"), 2))
    t = plan["totals"]
    usage.add_row("total", _n(t["calls"]), _tokens(t["input_tokens"]), _tokens(t["output_tokens"]), "",
                  _n(t["gpu_hours"], 1), _n(t["cost"], 2))
    console.print(usage)
    f = plan["fleet"]
    if "wall_hours" in f:
        paced = {"bottleneck": "the bottleneck role", "orchestrator": "the orchestrator's CPU",
                 "documents": "the documents' chains of calls"}[f["wall_bound"]]
        table = Table(title=f"fleet: {f['wall_hours']:,.1f} h, paced by {paced}; bottleneck role {f['bottleneck']}; "
                            f"{f['calls_per_s']:,.1f} calls/s -> {f['shards']} orchestrator shard(s)")
        for name in ("role", "hours", "busy", "replicas busy", "calls/s", "in flight", "max_concurrency"):
            table.add_column(name, justify="left" if name == "role" else "right")
        for role, r in plan["roles"].items():
            table.add_row(role, _n(r.get("hours"), 1), f"{r['busy_share']:.0%}" if "busy_share" in r else "-",
                          _n(r.get("replicas_busy")), _n(r.get("calls_per_s"), 2), _n(r.get("in_flight")),
                          _n(r.get("max_concurrency")))
        console.print(table)
        if f["documents_in_flight"]:
            console.print(f"documents in flight: about {f['documents_in_flight']:,} "
                          f"({f['documents_in_flight_per_shard']:,} per shard; generate.max_docs_in_flight is "
                          f"{f['max_docs_in_flight']})")
    for line in memory_lines(plan["memory"]):
        # Unwrapped, so a log keeps each role's verdict on one line
        warning = line.startswith("WARNING")
        console.print(line, soft_wrap=True, highlight=False, style="bold yellow" if warning else None)
    for line in f["advice"]:
        console.print(f"- {line}")
    console.print(f"plan in {run_dir / 'plan.json'}")


def run(cfg: RootConfig, run_dir: Path) -> None:
    pilot = read_pilot(cfg) if cfg.plan.pilot else None
    plan = make_plan(cfg, pilot)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "plan.json", plan)
    print_plan(plan, run_dir)
    from autodata.tracking import flatten, start_wandb

    wandb_run = start_wandb(cfg, run_dir, job_type="plan")
    if wandb_run is not None:
        wandb_run.summary.update(dict(flatten("plan", {k: plan[k] for k in ("roles", "totals", "fleet", "memory")})))
        wandb_run.finish()


# Input checks, beside the stage (a one-module stage); validate() finds check_plan through autodata/stages.py
def check_plan(cfg: RootConfig, env: Optional[Mapping[str, str]] = None) -> list[Problem]:
    """``env`` is unused: the planner calls no endpoint, so no URL or API key is needed. The pilot run dir and the
    target (plan.target or generate.target_accepted) are checked when the stage starts."""
    problems: list[Problem] = []
    p, gen = cfg.plan, cfg.generate
    require_choice(problems, "domain.name", cfg.domain.name, tuple(sorted(DOMAINS)))
    require_choice(problems, "method.name", cfg.method.name, methods_of(cfg.domain.name))
    require_choice(problems, "logger", cfg.logger, tuple(LOGGERS))
    if p.target is not None:
        require_positive(problems, "plan.target", p.target)
    if p.rounds_per_accepted is not None and not (isinstance(p.rounds_per_accepted, (int, float))
                                                  and p.rounds_per_accepted >= 1):
        problems.append(Problem("plan.rounds_per_accepted", p.rounds_per_accepted, "must be >= 1 (the accepting "
                                "round counts)", "set it to a pilot's mean_rounds_per_accepted, or null for the "
                                "paper's 6.59"))
    if not 0.0 <= p.too_easy_share <= 1.0:
        problems.append(Problem("plan.too_easy_share", p.too_easy_share, "must lie in [0, 1] (a share of the "
                                "rejected rounds)", "set 0.8 (paper CS) or 0 for the upper bound"))
    require_positive(problems, "plan.orchestrator_calls_per_s", p.orchestrator_calls_per_s)
    for key in ("weak_samples", "strong_samples", "solver_wave", "max_docs_in_flight"):
        require_positive(problems, f"generate.{key}", getattr(gen, key))
    if gen.challengers_per_round is not None:
        require_positive(problems, "generate.challengers_per_round", gen.challengers_per_round)
    for group in ("tokens", "roles"):
        for role in getattr(p, group):
            if role not in ROLES:
                problems.append(Problem(f"plan.{group}.{role}", role, f"is not a generate role ({', '.join(ROLES)})",
                                        "fix the spelling or remove it"))
    for role, size in p.tokens.items():
        for key in ("input", "output"):
            require_positive(problems, f"plan.tokens.{role}.{key}", getattr(size, key), allow_zero=True)
    for role, rc in p.roles.items():
        prefix = f"plan.roles.{role}"
        for key in ("replica_tokens_per_s", "latency_s"):
            if getattr(rc, key) is not None:
                require_positive(problems, f"{prefix}.{key}", getattr(rc, key))
        for key in ("price_in_per_mtok", "price_out_per_mtok"):
            if getattr(rc, key) is not None:
                require_positive(problems, f"{prefix}.{key}", getattr(rc, key), allow_zero=True)
        for key in ("replicas", "gpus_per_replica"):
            if not isinstance(getattr(rc, key), int) or getattr(rc, key) < 1:
                problems.append(Problem(f"{prefix}.{key}", getattr(rc, key), "must be an integer >= 1",
                                        f"set {prefix}.{key} to a count"))
    return problems
