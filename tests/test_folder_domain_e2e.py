"""The worked example end to end: the finance folder domain (autodata/domains/folders/finance) on the finance
fixture corpus generates, trains one GRPO step, evaluates and reports, with scripted models; a bad folder
through the CLI exits 2 naming the file and the key.

The models are scripted (tests/scripted.py): the challenger writes one finance task per document, the weak
solver answers ANS_BAD and the strong one ANS_GOOD, and the judge meets every positive criterion of an ANS_GOOD
answer and none of an ANS_BAD one, so every task is accepted. Training runs one step of a 2-layer model built
from a config (no weights loaded), as tests/test_train_smoke.py's LoRA test does.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from autodata.backends.base import ChatRequest
from autodata.config import RootConfig, model_roles, register_configs, to_typed
from autodata.domains import resolve_config
from autodata.llm import LLM
from autodata.rundir import read_jsonl
from autodata.validation import validate
from tests.scripted import ScriptedBackend

ROOT = Path(__file__).resolve().parents[1]
FINANCE = ROOT / "autodata" / "domains" / "folders" / "finance"
CORPUS = ROOT / "tests" / "fixtures" / "corpus" / "finance" / "finance.jsonl"
register_configs()

# The scripted task's rubric: 5 positive criteria (weights sum 20) and 2 penalties
RUBRIC = [{"criterion": f"Computes step {i} of the balance correctly", "weight": 4, "category": "correctness"}
          for i in range(1, 6)]
RUBRIC += [{"criterion": "Subtracts inflation from the nominal rate as if that were exact", "weight": -3,
            "category": "misconception"},
           {"criterion": "Ignores that the fee is charged on past growth", "weight": -2, "category": "misconception"}]


def compose_cfg(tmp_path: Path, stage: str, *overrides: str) -> RootConfig:
    """The config run.py would build for ``stage`` on the finance folder (folder values applied, validated)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = to_typed(compose(config_name="config", overrides=[
            f"stage={stage}", "domain=folder", f"domain.path={FINANCE}", "corpus=finance_fixture", "corpus.limit=null",
            "progress=false", *overrides]))
    cfg.cache.path = str(tmp_path / "cache.sqlite")
    cfg.domain = resolve_config(cfg.domain)
    validate(cfg)
    return cfg


def user_text(request: ChatRequest) -> str:
    return "\n".join(m["content"] for m in request.messages if m["role"] == "user")


def finance_task(document: str) -> str:
    """A task that passes the finance folder's structural rules, its question naming the document's topic."""
    topic = re.search(r"<document>\n(\w+(?: \w+){0,3})", document).group(1)
    return json.dumps({
        "plan": "Test compounding of a yearly fee against a cheaper alternative.",
        "question_type": "calculation",
        "tags": ["compounding", "fees"],
        "context": f"A saver puts 10,000 into a fund for 30 years; topic: {topic}. Fund A earns 6.9 percent a year "
                   "after fees, fund B 6.0 percent.",
        "question": "How much more does fund A hold than fund B after 30 years, to the nearest hundred?",
        "reference_answer": "About 16,600: 10,000 x 1.069^30 is about 74,000 and 10,000 x 1.06^30 about 57,400.",
        "rubric": RUBRIC,
    })


def verdicts(request: ChatRequest) -> str:
    text = user_text(request)
    good = "ANS_GOOD" in text
    met = [good and c["weight"] > 0 for c in RUBRIC]
    return json.dumps({"verdicts": [{"id": i, "met": m} for i, m in enumerate(met, start=1)]})


def script(role: str, request: ChatRequest, call: int):
    if role == "challenger":
        return finance_task(user_text(request))
    if role == "quality_verifier":
        return json.dumps({"feedback": "", "verdict": "PASS"})
    if role in ("weak_solver", "strong_solver"):
        answer = "ANS_GOOD: about 16,600" if role == "strong_solver" else "ANS_BAD: about 3,000"
        return [answer] * request.n
    if role == "judge":
        return verdicts(request)
    if role == "feedback":
        return "The weak model solved it."
    raise AssertionError(f"unexpected role {role}")


def scripted(cfg: RootConfig) -> tuple[LLM, dict[str, ScriptedBackend]]:
    backends = {role: ScriptedBackend(role, script) for role in model_roles(cfg.models)}
    return LLM(cfg.models, seed=0, backends=backends), backends


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """stage=generate on the seven finance documents, one round each."""
    from autodata.generate import generate

    tmp = tmp_path_factory.mktemp("finance")
    cfg = compose_cfg(tmp, "generate", "generate.max_rounds=1")
    llm, backends = scripted(cfg)
    stats = asyncio.run(generate(cfg, tmp / "generate", llm=llm))
    assert stats["accepted"] == 7, stats
    # The challenger was held to the schema domain.yaml declares
    schema = backends["challenger"].requests[0].json_schema
    assert list(schema["properties"]) == ["plan", "question_type", "tags", "context", "question", "reference_answer",
                                          "rubric"]
    return tmp / "generate"


def test_generate_writes_rows_of_the_folder_domain(generated):
    train = list(read_jsonl(generated / "train.jsonl"))
    heldout = list(read_jsonl(generated / "heldout.jsonl"))
    assert len(train) + len(heldout) == 7 and train and heldout
    row = train[0]
    assert row["domain"] == "finance"
    assert row["question_type"] == "calculation" and row["tags"] == ["compounding", "fees"]
    assert [c["weight"] for c in row["rubric"]] == [c["weight"] for c in RUBRIC]
    assert row["weak_scores"] == [0.0] * 3 and row["strong_scores"] == [1.0] * 3
    # The document ids are the fixture's
    ids = {json.loads(line)["id"] for line in CORPUS.read_text().splitlines()}
    assert {r["document_id"] for r in train + heldout} == ids


def test_one_grpo_step_on_the_generated_data(generated, tmp_path):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from autodata.backends.embedded import resolve_model
    from training.stage import train

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("embedded"))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id))
    cfg = compose_cfg(tmp_path, "train", "experiment=smoke", f"train.dataset={generated}", "train.max_steps=1",
                      "train.max_completion_length=8")
    judge = ScriptedBackend("judge", lambda role, request, call: verdicts(request))
    summary = train(cfg, tmp_path / "train", llm=LLM(cfg.models, backends={"judge": judge}), model=model,
                    tokenizer=tokenizer)
    assert summary["global_step"] == 1
    rewards = list(read_jsonl(tmp_path / "train" / "rewards.jsonl"))
    # The judge got the folder's judge prompt, with the finance rubric
    assert judge.requests and "Subtracts inflation from the nominal rate" in user_text(judge.requests[0])
    assert rewards and all(r["reward"] == 0.0 for r in rewards if r["status"] == "graded")


def test_eval_and_report_on_the_held_out_split(generated, tmp_path):
    from eval.report import make_report
    from eval.stage import evaluate

    cfg = compose_cfg(tmp_path, "eval", f"eval.datasets=[{generated}]", "eval.model=finance-policy")
    llm, backends = scripted(cfg)
    metrics = asyncio.run(evaluate(cfg, tmp_path / "eval", llm=llm))
    (result,) = metrics["datasets"].values()
    held = len(list(read_jsonl(generated / "heldout.jsonl")))
    # The evaluated model plays the weak solver: ANS_BAD, no positive criterion met
    assert result["prompts"] == held and result["mean_at_3"]["value"] == 0.0
    solver_prompt = backends["weak_solver"].requests[0].messages
    assert solver_prompt[0]["content"].startswith("You are an expert in personal finance")
    assert "reference" not in solver_prompt[-1]["content"].lower()

    report = compose_cfg(tmp_path, "report", "report.plots=false", "report.metrics=[mean_at_3]",
                         f"+report.runs={{finance/heldout: {tmp_path / 'eval'}}}",
                         f"+report.generate_runs={{agentic: {generated}}}")
    cells = make_report(report.report, tmp_path / "report", report.domain.name)
    ours = {(c.row, c.column, c.metric): c.ours for c in cells}
    assert ours[("finance", "heldout", "mean_at_3")] == 0.0
    # The data-quality table reads the generate run: every accepted task separated the models by the full score
    assert ours[("gap", "agentic", "data_quality")] == 1.0
    assert "| finance | 0.000 ± 0.000 (n=" in (tmp_path / "report" / "report.md").read_text()


def test_a_bad_folder_exits_2_naming_the_file_and_key(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for template in FINANCE.glob("*.j2"):
        (bad / template.name).write_text(template.read_text())
    (bad / "domain.yaml").write_text((FINANCE / "domain.yaml").read_text().replace("policy: cs_paper",
                                                                                   "policy: no_such_policy"))
    proc = subprocess.run([sys.executable, "-m", "autodata.run", "stage=generate", "domain=folder",
                           f"domain.path={bad}", "corpus=finance_fixture", f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out, out
    assert f"{bad / 'domain.yaml'}" in out and "acceptance.policy" in out and "no_such_policy" in out, out
    # Refused before any work: the run dir holds no output
    assert not (tmp_path / "run" / "rounds.jsonl").exists()
