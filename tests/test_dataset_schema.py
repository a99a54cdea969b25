"""The datasets export of a generate run (dataset/) and its card: one schema for every split, empty ones
included; a `prompt` column a stock TRL GRPOTrainer trains on; older exports still read; and a card that names
its license, language and method but no URL, host or path of the machine that made it."""

from __future__ import annotations

import json

import pytest
import yaml

from autodata.config import DomainConfig
from autodata.dataset_schema import NAMES, features, from_record, to_record
from autodata.domains import build_domain
from autodata.examples import task_of, to_example
from autodata.redact import redact_argv, redact_text, redact_value
from autodata.rundir import read_jsonl, write_provenance
from tests.test_generate_loop import Scenario, make_cfg, run

ACCEPT = Scenario([{"weak": "BAD", "strong": "GOOD"}])
TOO_EASY = Scenario([{"weak": "GOOD", "strong": "GOOD"}])
CS = build_domain(DomainConfig(name="cs"))


def load(tmp_path):
    import datasets

    return datasets.load_from_disk(str(tmp_path / "run" / "dataset"))


def test_a_run_that_accepted_nothing_saves_a_dataset_that_loads(tmp_path):
    stats, _ = run(make_cfg(tmp_path, n_docs=1, max_rounds=1), tmp_path, TOO_EASY)
    assert stats["accepted"] == 0
    saved = load(tmp_path)
    assert {name: len(ds) for name, ds in saved.items()} == {"train": 0, "heldout": 0}
    assert saved["train"].features == saved["heldout"].features == features()


def test_every_split_has_the_declared_columns_and_typed_nested_fields(tmp_path):
    import datasets

    run(make_cfg(tmp_path, n_docs=4), tmp_path, ACCEPT)
    saved = load(tmp_path)
    assert {name: len(ds) for name, ds in saved.items()} == {"train": 2, "heldout": 2}
    assert saved["train"].features == saved["heldout"].features == features()
    assert tuple(saved["train"].column_names) == NAMES
    rubric = saved["train"].features["rubric"]
    assert isinstance(rubric, datasets.List) and set(rubric.feature) == {"criterion", "weight", "category", "extra"}
    assert rubric.feature["weight"] == datasets.Value("float64")

    accepted = {r["id"]: r for r in read_jsonl(tmp_path / "run" / "accepted.jsonl")}
    # Every field the loop writes is a column: nothing of accepted.jsonl is left out of the export
    assert set().union(*accepted.values()) <= set(NAMES)
    record = saved["train"][0]
    row = accepted[record["id"]]
    assert record["rubric"][0] == {"criterion": row["rubric"][0]["criterion"], "weight": row["rubric"][0]["weight"],
                                   "category": row["rubric"][0]["category"], "extra": "{}"}
    assert json.loads(record["extra"]) == row["extra"] and record["loop_judge"] is None
    # The prompt is the one stage=train builds from the same row, and the record turns back into the row
    assert record["prompt"] == to_example(row, CS)["prompt"]
    assert [m["role"] for m in record["prompt"]] == ["system", "user"]
    assert row["question"] in record["prompt"][-1]["content"]
    assert from_record(record) == row
    # stage=eval reads a record as it reads the row (to_example decodes it; weights come back as floats)
    from_export, from_row = to_example(record, CS), to_example(row, CS)
    assert from_export["prompt"] == from_row["prompt"] and task_of(from_export["task"]) == task_of(from_row["task"])


LEGAL_ROW = {
    "id": "agentic/statute_7", "document_id": "statute_7", "domain": "legal", "method": "agentic",
    "question": "My landlord kept my deposit. What can I do?", "context": "", "reference_answer": "Send a demand.",
    "rubric": [{"criterion": "Names the deadline", "weight": 9.0, "category": "law",
                "extra": {"number": 1, "capability": "rule", "weight_class": "critically_important"}},
               {"criterion": "Asserts that the tenant must sue first", "weight": -5.0, "category": "law",
                "extra": {"number": 2, "capability": "rule", "weight_class": "detrimental"}}],
    "question_type": "housing", "tags": [], "extra": {"plan": "deposit dispute"},
    "weak_scores": [0.1, 0.2], "strong_scores": [0.9, 1.0], "weak_mean": 0.15, "strong_mean": 0.95, "gap": 0.8,
    "rounds_used": 2, "variant": "abc123",
    "loop_judge": {"weak_pattern": "misses", "strong_pattern": "finds", "gap_interpretation": "real",
                   "rubric_concerns": "", "grpo_suitability": "high", "verdict": "accept", "verdict_reason": "ok",
                   "suggestion_for_writer": ""},
}


def test_a_legal_row_keeps_its_criteria_keys_and_loop_verdict_through_the_export(tmp_path):
    import datasets

    legal = build_domain(DomainConfig(name="legal"))
    record = to_record(LEGAL_ROW, to_example(LEGAL_ROW, legal)["prompt"])
    ds = datasets.Dataset.from_list([record], features=features())
    stored = ds[0]
    assert json.loads(stored["rubric"][0]["extra"]) == LEGAL_ROW["rubric"][0]["extra"]
    assert stored["loop_judge"]["grpo_suitability"] == "high"
    assert from_record(stored) == LEGAL_ROW


def test_an_older_export_with_json_strings_and_an_empty_split_still_trains(tmp_path):
    """Exports written before the typed schema: nested fields as JSON strings, an empty split saved with no data
    file (which datasets.load_from_disk cannot read)."""
    import datasets

    from tests.test_train_data import fixture_rows
    from training.data import load_training_data

    rows = fixture_rows("train.jsonl")
    flat = [{k: json.dumps(v) if k in ("rubric", "extra") else v for k, v in r.items()} for r in rows]
    old = datasets.DatasetDict({"train": datasets.Dataset.from_list(flat),
                                "heldout": datasets.Dataset.from_dict({"id": []})})
    old.save_to_disk(str(tmp_path / "dataset"))
    with pytest.raises(IndexError):
        datasets.load_from_disk(str(tmp_path / "dataset"))
    data = load_training_data(str(tmp_path / "dataset"), CS)
    assert [r["example_id"] for r in data.rows] == [r["id"] for r in rows]
    assert data.rows[0]["prompt"] == to_example(rows[0], CS)["prompt"]


@pytest.mark.slow
def test_a_stock_grpo_trainer_trains_one_step_on_the_prompt_column(tmp_path):
    """TRL's GRPOTrainer as a user's own script would call it: the saved train split as is, a tiny random model,
    a reward that reads a column of the dataset."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from autodata.backends.embedded import resolve_model

    run(make_cfg(tmp_path, n_docs=4), tmp_path, ACCEPT)
    train = load(tmp_path)["train"]
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("embedded"))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    seen: list[tuple] = []

    def reward(prompts, completions, rubric, **_):
        seen.append((prompts, rubric))
        # 0, 1 within each group of two completions of one prompt: a nonzero advantage, so the step moves weights
        return [float(i % 2) for i in range(len(completions))]

    args = GRPOConfig(output_dir=str(tmp_path / "grpo"), max_steps=1, per_device_train_batch_size=2,
                      num_generations=2, max_completion_length=8, learning_rate=1e-2, beta=0.0, use_cpu=True,
                      bf16=False, gradient_checkpointing=False, save_strategy="no", report_to="none",
                      disable_tqdm=True)
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=train,
                          processing_class=tokenizer)
    trainer.train()

    assert trainer.state.global_step == 1
    (prompts, rubric), = seen
    assert all(p in train["prompt"] for p in prompts) and rubric[0] in train["rubric"]
    assert any(not torch.equal(before[name], p) for name, p in model.named_parameters())


# ---------------------------------------------------------------- the card: license, language, citation, redaction
HOME = "/home/alice"
ARGV = ["/src/autodata/run.py", "stage=generate", "corpus=folder", f"corpus.path={HOME}/private_corpus",
        "hydra.run.dir=../runs/alice_cs", "models.base_url=http://private-node:8000/v1",
        "models.roles.judge.base_url=http://10.1.2.3:8000/v1",
        "+models.roles.weak_solver.extra_body={api_base:https://gpu-node-7.cluster.example.org:9000,seed:3}",
        "models.endpoints_file=~/endpoints.yaml", "--config-dir", "/srv/alice/conf",
        "models.roles.strong_solver.model=/scratch/alice/ckpt-900", "models.api_key_env=ALICE_KEY",
        "generate.license=other", "generate.license_name=alice-data-license"]
LEAKS = ("alice/", "/home", "/srv", "/scratch", "private-node", "10.1.2.3", "gpu-node-7", "cluster.example.org",
         "endpoints.yaml", "private_corpus", "ALICE_KEY", "runs/alice_cs", ":8000", ":9000")


def test_the_card_has_license_language_citation_and_no_url_host_or_path(tmp_path):
    cfg = make_cfg(tmp_path, n_docs=2)
    cfg.corpus.path = f"{tmp_path}/docs"
    cfg.models.backend, cfg.models.model = "openai", "Qwen/Qwen3.5-4B"
    cfg.models.base_url = "http://private-node:8000/v1"
    cfg.models.roles["strong_solver"].model = "/scratch/alice/ckpt-900"
    cfg.generate.license, cfg.generate.license_name = "other", "alice-data-license"
    cfg.generate.license_link, cfg.generate.language = "LICENSE", ["en", "de"]
    write_provenance(cfg, tmp_path / "run", argv=ARGV)
    run(cfg, tmp_path, ACCEPT)

    text = (tmp_path / "run" / "dataset" / "README.md").read_text()
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert (meta["license"], meta["license_name"], meta["license_link"]) == ("other", "alice-data-license", "LICENSE")
    assert meta["language"] == ["en", "de"] and meta["multilinguality"] == "multilingual"
    assert meta["task_categories"] == ["question-answering", "text-generation"] and meta["size_categories"] == ["n<1K"]
    assert meta["source_datasets"] == ["original"]
    assert "@misc{kulikov2026autodata" in body and "eprint = {2606.25996}" in body
    assert "| strong_solver | openai | <path> |" in body and "| judge | openai | Qwen/Qwen3.5-4B |" in body
    # The command is still readable: what it set, with the values that must not leave the machine replaced
    assert ("'corpus.path=<path>' 'hydra.run.dir=<path>' 'models.base_url=<url>' 'models.roles.judge.base_url=<url>'"
            in body)
    assert "'+models.roles.weak_solver.extra_body={api_base:<url>,seed:3}'" in body
    assert "--config-dir '<path>'" in body and "'models.api_key_env=<redacted>'" in body
    for leak in LEAKS + (str(tmp_path),):
        assert leak not in text, leak


def test_the_hub_id_of_an_hf_corpus_is_its_source_dataset_but_a_local_path_is_not(tmp_path):
    from autodata.config import CorpusConfig
    from autodata.generate.card import hub_dataset_id

    assert hub_dataset_id(CorpusConfig(source="hf", path="my-org/papers")) == "my-org/papers"
    (tmp_path / "org" / "papers").mkdir(parents=True)
    local = CorpusConfig(source="hf", path=str(tmp_path / "org" / "papers"))
    assert hub_dataset_id(local) is None and hub_dataset_id(CorpusConfig(source="folder", path="org/x")) is None


def test_license_other_without_a_name_or_link_is_refused():
    from autodata.config import RootConfig
    from autodata.validation import ConfigError, validate

    cfg = RootConfig(stage="generate")
    cfg.generate.license = "other"
    with pytest.raises(ConfigError) as err:
        validate(cfg, env={})
    assert "generate.license_name (None) is required with generate.license=other" in str(err.value)
    assert "generate.license_link (None)" in str(err.value)


@pytest.mark.parametrize("arg,expected", [
    ("models.base_url=http://node7:8000/v1", "models.base_url=<url>"),
    ("models.roles.judge.base_urls=[http://a:1/v1,http://b:2/v1]", "models.roles.judge.base_urls=<url>"),
    ("train.vllm.server_base_url=node7:8000", "train.vllm.server_base_url=<url>"),
    ("+models.default.extra_body={api_base:http://10.0.0.5:8000}", "+models.default.extra_body={api_base:<url>}"),
    ("+models.default.extra_body={host:node7,port:8000}", "+models.default.extra_body={host:<host>,port:8000}"),
    ('+models.default.extra_body={"cache_dir": "scratch/x"}', '+models.default.extra_body={"cache_dir": <path>}'),
    ("corpus.path=papers", "corpus.path=<path>"),
    ("corpus.path=C:\\Users\\alice\\papers", "corpus.path=<path>"),
    ("hydra.run.dir=runs/${now:%Y-%m-%d}", "hydra.run.dir=<path>"),
    ("train.dataset=[runs/cot,runs/agentic]", "train.dataset=<path>"),
    ("eval.datasets=[cot_test=runs/a+runs/b]", "eval.datasets=<path>"),
    ("domain.variant=variants/v3", "domain.variant=<path>"),
    ("models.roles.weak_solver.model=/scratch/ckpt", "models.roles.weak_solver.model=<path>"),
    ("models.roles.weak_solver.model=~/ckpt", "models.roles.weak_solver.model=<path>"),
    ("models.roles.weak_solver.model=$SCRATCH/ckpt", "models.roles.weak_solver.model=<path>"),
    ("models.roles.weak_solver.model=./ckpt", "models.roles.weak_solver.model=<path>"),
    ("models.roles.weak_solver.model=out/run/final", "models.roles.weak_solver.model=<path>"),
    ("models.api_key_env=MY_KEY", "models.api_key_env=<redacted>"),
    ("hydra.launcher.account=alice_lab", "hydra.launcher.account=<redacted>"),
    ("--config-dir=/home/alice/conf", "--config-dir=<path>"),
    ("/home/alice/extra.yaml", "<path>"),
    ("user@login.cluster.org", "<host>"),
    # Kept: what the data is and how it was made
    ("models.roles.judge.model=Qwen/Qwen3.5-4B", "models.roles.judge.model=Qwen/Qwen3.5-4B"),
    ("models.model=meta-llama/Llama-3.1-8B-Instruct", "models.model=meta-llama/Llama-3.1-8B-Instruct"),
    ("models.roles.judge.max_tokens=4096", "models.roles.judge.max_tokens=4096"),
    ("generate.push_to_hub=my-org/cs_agentic", "generate.push_to_hub=my-org/cs_agentic"),
    ("experiment=paper_cs", "experiment=paper_cs"),
    ("hydra/launcher=submitit_slurm", "hydra/launcher=submitit_slurm"),
    ("~eval", "~eval"),
    ("train.learning_rate=1e-6", "train.learning_rate=1e-6"),
])
def test_redacting_a_command_line_argument(arg, expected):
    assert redact_argv([arg]) == [expected]


def test_the_flag_after_which_a_path_follows_is_redacted():
    assert redact_argv(["-cd", "my_conf", "-m", "stage=generate"]) == ["-cd", "<path>", "-m", "stage=generate"]


@pytest.mark.parametrize("text,expected", [
    ("see https://api.example.com/v1/chat and s3://bucket/x", "see <url> and <url>"),
    ("ws://[::1]:8000/socket", "<url>"),
    ("connect to [fe80::1]:8000 or 192.168.1.20", "connect to <host> or <host>"),
    ("api.together.xyz:443", "<host>"),
    ("localhost:8080", "<host>"),
    ("/Users/alice/Library/x", "<path>"),
    ("~bob/data", "<path>"),
    ("%USERPROFILE%\\data", "<path>"),
    ("\\\\fileserver\\share\\papers", "<path>"),
    ("../shared/corpus", "<path>"),
    ("train.jsonl", "<path>"),
    # Kept: model names with dots, tags, numbers, a spaced slash
    *[(kept, kept) for kept in ("gemini-2.5-pro, gpt-4.1-mini, </think>, 0.65, weak / strong", "torch.float32")],
])
def test_redacting_free_text(text, expected):
    assert redact_text(text) == expected


def test_a_relative_path_that_exists_here_is_redacted_but_a_hub_id_is_not(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckpts" / "final").mkdir(parents=True)
    assert redact_value("models.model", "ckpts/final") == "<path>"
    assert redact_value("models.model", "Qwen/Qwen3.5-4B") == "Qwen/Qwen3.5-4B"
    assert redact_value("generate.seed", 3) == 3 and redact_value("corpus.path", None) is None


def test_module_doctests():
    import doctest

    from autodata import dataset_schema, redact

    for module in (dataset_schema, redact):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__
