"""Training data: every form of a generate run's output, held-out exclusion, field checks, prompts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from autodata.config import DomainConfig
from autodata.domains import build_domain
from autodata.examples import task_of
from autodata.generate.outputs import save_dataset
from autodata.rundir import read_jsonl
from training.data import DataError, check_enough, load_training_data

FIXTURE = Path(__file__).parent / "fixtures" / "train_run"
CS = build_domain(DomainConfig(name="cs"))


def fixture_rows(name: str = "accepted.jsonl") -> list[dict]:
    return list(read_jsonl(FIXTURE / name))


def write_run(path: Path, rows: list[dict], heldout_ids: set[str] = frozenset(), *, train_file: bool = True,
              dataset: bool = False) -> Path:
    """A generate run dir as generate/outputs.py writes it."""
    path.mkdir(parents=True, exist_ok=True)
    train = [r for r in rows if r["id"] not in heldout_ids]
    held = [r for r in rows if r["id"] in heldout_ids]
    files = {"accepted.jsonl": rows, "heldout.jsonl": held, **({"train.jsonl": train} if train_file else {})}
    for name, subset in files.items():
        (path / name).write_text("".join(json.dumps(r) + "\n" for r in subset))
    if dataset:
        save_dataset(path / "dataset", train, held, CS)
    return path


def ids(data) -> list[str]:
    return [row["example_id"] for row in data.rows]


def test_accepted_jsonl_drops_the_runs_heldout_examples():
    data = load_training_data(str(FIXTURE / "accepted.jsonl"), CS)
    heldout = {r["id"] for r in fixture_rows("heldout.jsonl")}
    assert len(data.rows) == 6 and not heldout & set(ids(data))
    assert data.sources[0].heldout_dropped == 2


def test_a_run_dir_reads_its_train_split():
    data = load_training_data(str(FIXTURE), CS)
    assert data.sources[0].kind == "train.jsonl"
    assert ids(data) == [r["id"] for r in fixture_rows("train.jsonl")]


def test_the_saved_datasets_dir_reads_the_train_split_and_decodes_the_rubric(tmp_path):
    rows = fixture_rows()
    run = write_run(tmp_path / "run", rows, {rows[0]["id"]}, dataset=True)
    data = load_training_data(str(run / "dataset"), CS)
    assert data.sources[0].kind == "dataset:train"
    assert rows[0]["id"] not in ids(data) and len(data.rows) == len(rows) - 1
    task = task_of(data.rows[0]["task"])
    assert [c.weight for c in task.rubric] == [c["weight"] for c in rows[1]["rubric"]]


def test_a_run_dir_with_only_the_dataset_export(tmp_path):
    rows = fixture_rows()
    run = write_run(tmp_path / "run", rows, {rows[-1]["id"]}, dataset=True)
    for name in ("accepted.jsonl", "train.jsonl", "heldout.jsonl"):
        (run / name).unlink()
    data = load_training_data(str(run), CS)
    assert len(data.rows) == len(rows) - 1 and rows[-1]["id"] not in ids(data)


def test_the_combined_arm_concatenates_sources(tmp_path):
    rows = fixture_rows("train.jsonl")
    cot = [dict(r, id=r["id"].replace("agentic/", "cot/"), method="cot") for r in rows[:3]]
    write_run(tmp_path / "cot", cot)
    data = load_training_data([str(tmp_path / "cot"), str(FIXTURE)], CS)
    assert len(data.rows) == 3 + len(rows)
    assert {Path(r["source"]).parent.name for r in data.rows} == {"cot", "train_run"}
    assert data.summary()["examples"] == 9


def test_the_same_source_twice_is_not_doubled():
    data = load_training_data([str(FIXTURE), str(FIXTURE / "accepted.jsonl")], CS)
    assert len(data.rows) == 6 and data.duplicates_dropped == 6


def test_the_heldout_file_is_refused():
    with pytest.raises(DataError, match="held-out split, which is never trained on"):
        load_training_data(str(FIXTURE / "heldout.jsonl"), CS)


def test_the_prompt_is_the_solver_prompt_from_context_and_question():
    data = load_training_data(str(FIXTURE), CS)
    row, source = data.rows[0], fixture_rows("train.jsonl")[0]
    assert [m["role"] for m in row["prompt"]] == ["system", "user"]
    user = row["prompt"][-1]["content"]
    assert source["context"] in user and source["question"] in user
    # The reference answer and the rubric are for the judge only.
    assert source["reference_answer"] not in user and source["rubric"][0]["criterion"] not in user
    assert task_of(row["task"]).reference_answer == source["reference_answer"]


@pytest.mark.slow
def test_the_prompt_goes_through_the_policys_chat_template():
    from transformers import AutoTokenizer
    from trl.data_utils import maybe_apply_chat_template

    from autodata.backends.embedded import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("embedded"))
    row = load_training_data(str(FIXTURE), CS).rows[0]
    text = maybe_apply_chat_template({"prompt": row["prompt"]}, tokenizer)["prompt"]
    assert text.startswith("<|im_start|>system") and text.rstrip().endswith("<|im_start|>assistant")
    assert row["prompt"][-1]["content"] in text


def test_a_missing_path_says_where_it_looked_and_what_makes_one(tmp_path):
    with pytest.raises(DataError) as info:
        load_training_data(str(tmp_path / "runs" / "nope"), CS)
    text = str(info.value)
    assert "nope does not exist" in text and "stage=generate" in text


def test_missing_fields_are_named_with_the_stage_that_writes_them(tmp_path):
    rows = [{k: v for k, v in r.items() if k not in ("rubric", "reference_answer")} for r in fixture_rows()]
    rows[0]["reference_answer"] = "present in one row"
    write_run(tmp_path / "run", rows)
    with pytest.raises(DataError) as info:
        load_training_data(str(tmp_path / "run"), CS)
    text = str(info.value)
    assert "field 'rubric' is missing or empty in every row" in text
    assert "field 'reference_answer' is missing or empty in 7 of 8 rows" in text
    assert "written by stage=generate" in text


def test_verifiable_domains_need_no_rubric(tmp_path):
    rows = [{"id": f"agentic/p{i}", "domain": "principia", "question": f"q{i}", "context": "",
             "reference_answer": "The alternating group A_3."} for i in range(3)]
    write_run(tmp_path / "run", rows)
    data = load_training_data(str(tmp_path / "run"), build_domain(DomainConfig(name="principia")))
    assert len(data.rows) == 3
    assert "Final answer" in data.rows[0]["prompt"][0]["content"]


def test_data_from_another_domain_names_the_fix(tmp_path):
    rows = [{"id": "agentic/p0", "domain": "principia", "question": "q", "reference_answer": "r"}]
    write_run(tmp_path / "run", rows)
    with pytest.raises(DataError, match="add domain=principia"):
        load_training_data(str(tmp_path / "run"), CS)


def test_an_empty_run_says_why_generation_accepted_nothing(tmp_path):
    run = write_run(tmp_path / "run", [])
    (run / "stats.json").write_text(json.dumps({"why_none_accepted": "no task separated the models: too_easy"}))
    with pytest.raises(DataError) as info:
        load_training_data(str(run), CS)
    text = str(info.value)
    assert "0 training examples" in text and "too_easy" in text and "stage=generate" in text


def test_a_run_whose_examples_are_all_held_out_is_empty(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "run")
    (tmp_path / "run" / "heldout.jsonl").write_text((FIXTURE / "accepted.jsonl").read_text())
    with pytest.raises(DataError, match="8 held-out examples dropped"):
        load_training_data(str(tmp_path / "run" / "accepted.jsonl"), CS)


def test_too_few_examples_for_one_step():
    data = load_training_data(str(FIXTURE), CS)
    check_enough(data, completions_per_step=48, group_size=8)
    with pytest.raises(DataError, match="needs 16 prompts"):
        check_enough(data, completions_per_step=128, group_size=8)
