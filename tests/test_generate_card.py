"""The dataset card in dataset/README.md and the push to the hub (hub client stubbed: no network here)."""

from __future__ import annotations

import json

import pytest
import yaml

from autodata.config import AcceptanceConfig
from autodata.generate.card import acceptance_rule
from autodata.generate.stage import GenerateAborted
from autodata.rundir import write_provenance
from tests.test_generate_loop import Scenario, make_cfg, run

REPO = "my-org/cs_agentic"
ACCEPT = Scenario([{"weak": "BAD", "strong": "GOOD"}])
ARGV = ["/src/autodata/run.py", "stage=generate", "corpus=folder", "hydra.run.dir=runs/cs"]


def read_card(tmp_path) -> tuple[dict, str]:
    text = (tmp_path / "run" / "dataset" / "README.md").read_text()
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def test_card_states_method_models_rule_counts_corpus_and_command(tmp_path, monkeypatch):
    cfg = make_cfg(tmp_path, n_docs=2)
    # Served roles: the card must name the model, never the URL or the key.
    monkeypatch.setenv("SECRET_KEY_ENV", "sk-do-not-leak")
    cfg.models.backend, cfg.models.model = "openai", "Qwen/Qwen3.5-4B"
    cfg.models.base_url, cfg.models.api_key_env = "http://private-node:8000/v1", "SECRET_KEY_ENV"
    write_provenance(cfg, tmp_path / "run", argv=ARGV)
    stats, _ = run(cfg, tmp_path, ACCEPT)

    meta, body = read_card(tmp_path)
    assert meta["license"] == "unknown" and meta["tags"] == ["synthetic", "autodata", "agentic", "cs"]
    assert meta["language"] == ["en"] and meta["source_datasets"] == ["original"]
    # Two accepted examples: one held out (at most half), one to train on.
    assert meta["dataset_info"]["splits"] == [{"name": "train", "num_examples": 1},
                                              {"name": "heldout", "num_examples": 1}]
    assert meta["configs"][0]["data_files"] == [{"split": "train", "path": "data/train-*"},
                                                {"split": "heldout", "path": "data/heldout-*"}]
    assert "| judge | openai | Qwen/Qwen3.5-4B |" in body and "| challenger | openai | Qwen/Qwen3.5-4B |" in body
    assert "cs_paper: strong mean >= 0.65, weak mean < 0.5, gap (strong mean - weak mean) >= 0.2" in body
    for row in ("| source documents | 2 |", "| accepted examples | 2 |", "| train split | 1 |",
                "| heldout split | 1 |", "| mean rounds per accepted example | 1.000 |",
                "| weak solver mean (accepted) | 0.000 |", "| gap mean (accepted) | 1.000 |"):
        assert row in body
    assert "a local `folder` corpus (its path is not published), every document" in body
    assert str(tmp_path) not in body
    assert "python -m autodata.run stage=generate corpus=folder 'hydra.run.dir=<path>'" in body
    assert "sk-do-not-leak" not in body and "private-node" not in body and "SECRET_KEY_ENV" not in body


def test_the_card_leaves_the_saved_dataset_loadable(tmp_path):
    import datasets

    run(make_cfg(tmp_path, n_docs=2), tmp_path, ACCEPT)
    loaded = datasets.load_from_disk(str(tmp_path / "run" / "dataset"))
    assert {name: len(ds) for name, ds in loaded.items()} == {"train": 1, "heldout": 1}


@pytest.mark.parametrize("policy,rule", [
    ("cs_deployed", "cs_deployed: weak mean <= 0.5 and no weak run > 0.75; 0.65 <= strong mean < 0.95; "
                    "gap (strong mean - weak mean) >= 0.2; no run of either solver scores 0"),
    ("verifiable", "verifiable: weak solver correct in at most 1 of its runs, strong solver in at least 3"),
    ("legal_gap", "legal_gap: weak mean < 0.5, gap (strong mean - weak mean) >= 0.2; and the loop judge says "
                  "accept (it can only veto)"),
    ("loop_judge", "loop_judge: no score threshold: the loop judge reads every weak and strong rollout with its "
                   "rubric score and says accept or improve (improve when unsure); the hard rules (question length, "
                   "case recap, exam style) force improve"),
])
def test_acceptance_rule_in_words(policy, rule):
    assert acceptance_rule(AcceptanceConfig(policy=policy)) == rule


class HubStub:
    """Stands in for DatasetDict.push_to_hub and HfApi.upload_file, recording what they were given."""

    def __init__(self, monkeypatch, fail: bool = False):
        import inspect

        import datasets
        import huggingface_hub

        self.pushed: list[dict] = []
        self.uploaded: list[dict] = []
        stub = self
        # Calls are bound to the real signatures, so a wrong argument name fails here as it would on the hub.
        real_push = inspect.signature(datasets.DatasetDict.push_to_hub)
        real_upload = inspect.signature(huggingface_hub.HfApi.upload_file)

        def push_to_hub(dataset_dict, repo_id, **kwargs):
            real_push.bind(dataset_dict, repo_id, **kwargs)
            if fail:
                raise ConnectionError("hub unreachable")
            stub.pushed.append({"repo_id": repo_id, "splits": {k: len(v) for k, v in dataset_dict.items()}, **kwargs})

        def upload_file(api, **kwargs):
            real_upload.bind(api, **kwargs)
            stub.uploaded.append({"content": open(kwargs.pop("path_or_fileobj")).read(), "token": api.token, **kwargs})

        monkeypatch.setattr(datasets.DatasetDict, "push_to_hub", push_to_hub)
        monkeypatch.setattr(huggingface_hub.HfApi, "upload_file", upload_file)


def test_push_sends_the_splits_and_the_card(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    hub = HubStub(monkeypatch)
    stats, _ = run(make_cfg(tmp_path, n_docs=2, push_to_hub=REPO), tmp_path, ACCEPT)

    assert hub.pushed == [{"repo_id": REPO, "splits": {"train": 1, "heldout": 1}, "private": True,
                           "token": "hf_test_token"}]
    (upload,) = hub.uploaded
    assert upload["repo_id"] == REPO and upload["path_in_repo"] == "README.md" and upload["repo_type"] == "dataset"
    assert upload["token"] == "hf_test_token"
    assert upload["content"] == (tmp_path / "run" / "dataset" / "README.md").read_text()
    assert f"# {REPO}" in upload["content"] and f'load_dataset("{REPO}")' in upload["content"]
    expected = {"repo_id": REPO, "pushed": True, "splits": {"train": 1, "heldout": 1}, "error": None}
    assert stats["hub"] == expected
    assert json.loads((tmp_path / "run" / "stats.json").read_text())["hub"] == expected


def test_a_failed_push_keeps_the_outputs_says_how_to_retry_and_exits_4(tmp_path, monkeypatch, caplog):
    from autodata.generate import stage
    from tests.scripted import scripted_llm

    HubStub(monkeypatch, fail=True)
    cfg = make_cfg(tmp_path, n_docs=2, push_to_hub=REPO)
    run_dir = tmp_path / "run"
    llm, _ = scripted_llm(cfg.models, ACCEPT)
    real_generate = stage.generate
    # stage.run builds its own LLM; hand it the scripted one instead.
    monkeypatch.setattr(stage, "generate", lambda cfg, run_dir: real_generate(cfg, run_dir, llm=llm))
    monkeypatch.setattr("sys.argv", ["/src/autodata/run.py", "stage=generate", f"generate.push_to_hub={REPO}"])

    with pytest.raises(SystemExit) as exit_info:
        stage.run(cfg, run_dir)
    assert exit_info.value.code == 4
    for name in ("accepted.jsonl", "train.jsonl", "heldout.jsonl", "dataset/README.md", "dataset/dataset_dict.json"):
        assert (run_dir / name).exists(), name
    hub = json.loads((run_dir / "stats.json").read_text())["hub"]
    assert hub["pushed"] is False and hub["error"] == "ConnectionError: hub unreachable"
    # The retry command pins the run dir, so rerunning it resumes there (nothing is generated again).
    assert (f"python -m autodata.run stage=generate generate.push_to_hub={REPO} hydra.run.dir={run_dir}"
            in caplog.text)
    assert f"push to the hub dataset {REPO} failed" in caplog.text


def test_an_empty_split_is_not_pushed(tmp_path, monkeypatch):
    hub = HubStub(monkeypatch)
    # One accepted example: at most half may be held out, so heldout is empty.
    stats, _ = run(make_cfg(tmp_path, n_docs=1, push_to_hub=REPO), tmp_path, ACCEPT)
    assert [p["splits"] for p in hub.pushed] == [{"train": 1}] and stats["hub"]["splits"] == {"train": 1}
    meta, _ = read_card(tmp_path)
    assert meta["dataset_info"]["splits"] == [{"name": "train", "num_examples": 1}]


def test_nothing_accepted_pushes_nothing(tmp_path, monkeypatch):
    hub = HubStub(monkeypatch)
    cfg = make_cfg(tmp_path, n_docs=1, max_rounds=1, push_to_hub=REPO)
    stats, _ = run(cfg, tmp_path, Scenario([{"weak": "GOOD", "strong": "GOOD"}]))
    assert hub.pushed == [] and hub.uploaded == []
    assert stats["hub"]["pushed"] is False and "accepted no examples" in stats["hub"]["error"]


def test_a_repo_id_without_organisation_is_refused_before_any_call(tmp_path):
    cfg = make_cfg(tmp_path, push_to_hub="cs_agentic")
    with pytest.raises(GenerateAborted, match="must be ORG/NAME"):
        run(cfg, tmp_path, ACCEPT)
    assert not (tmp_path / "run").exists()


def test_card_is_valid_for_huggingface_hub(tmp_path):
    # The hub's own parser reads the metadata back.
    from huggingface_hub import DatasetCard

    run(make_cfg(tmp_path, n_docs=2), tmp_path, ACCEPT)
    card = DatasetCard.load(tmp_path / "run" / "dataset" / "README.md")
    assert card.data.license == "unknown" and card.data.task_categories == ["question-answering", "text-generation"]
    assert card.data.size_categories == ["n<1K"] and card.text.lstrip().startswith("# autodata agentic / cs")


def test_module_doctests():
    import doctest

    from autodata import hub_ids
    from autodata.generate import card, documents, outputs

    for module in (card, documents, hub_ids, outputs):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__
