"""Eval set sources and formats: the PRBench release layout, principia-bench names, parquet files, saved
`datasets` folders (with a split) and hf:// names, each read into the same items."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autodata.config import DomainConfig
from autodata.domains import build_domain
from eval.sets import EvalDataError, load_set

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "eval"
RELEASE = FIXTURES / "prbench_release.jsonl"
LEGAL = build_domain(DomainConfig(name="legal", recall_openers=[], banned_phrasings=[]))


def release_rows() -> list[dict]:
    return [json.loads(line) for line in RELEASE.read_text().splitlines()]


def user_prompt(item) -> str:
    return "\n".join(m["content"] for m in item.prompt if m["role"] == "user")


def test_prbench_release_rows_become_rubric_items_with_signed_class_weights():
    s = load_set(str(RELEASE), LEGAL)
    assert (s.name, s.format, [i.id for i in s.items]) == ("prbench_release", "prbench", ["prl-101", "prl-102"])
    first, second = s.items
    assert [(c.weight, c.category) for c in first.task.rubric] == [
        (9, "Legal accuracy"), (5, "Practical advice"), (-6, "Risk")]
    assert first.task.rubric[0].criterion.startswith("States that a landlord may not deduct")
    assert [c.weight for c in second.task.rubric] == [8, 2, -8]
    # The last user turn is the question; the earlier turns and the reference texts are the context.
    assert second.task.question.startswith("I work in the state whose rule is quoted below")
    assert "User: My employer fired me on Friday" in second.task.context
    assert "Assistant: It depends on your state" in second.task.context
    assert "Rule 12: wages of a discharged employee are due immediately" in second.task.context
    assert first.task.context == ""
    # The evaluated model sees the context and the question
    assert "Rule 12" in user_prompt(second) and "still have not paid me" in user_prompt(second)


def test_a_release_row_without_its_class_weight_is_an_error_naming_the_task(tmp_path):
    rows = release_rows()
    rows[1]["rubric"][1]["annotations"]["slightly_important_weight"] = None
    bad = tmp_path / "prbench_bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(EvalDataError, match="task prl-102: criterion of weight_class 'slightly_important' has no "
                                            "slightly_important_weight"):
        load_set(str(bad), LEGAL)


def test_parquet_saved_datasets_and_hf_names_read_the_same_items(tmp_path):
    from datasets import Dataset, DatasetDict

    from_jsonl = load_set(str(RELEASE), LEGAL)
    expected = [(i.id, i.task.question, i.task.context, [c.weight for c in i.task.rubric]) for i in from_jsonl.items]

    def same(s):
        return [(i.id, i.task.question, i.task.context, [c.weight for c in i.task.rubric]) for i in s.items]

    ds = Dataset.from_list(release_rows())
    parquet = tmp_path / "legal_hard.parquet"
    ds.to_parquet(str(parquet))
    s = load_set(str(parquet), LEGAL)
    assert (s.name, same(s)) == ("legal_hard", expected)

    saved = tmp_path / "prbench"
    DatasetDict({"legal": ds, "legal_hard": ds.select([1])}).save_to_disk(str(saved))
    s = load_set(f"{saved}:legal_hard", LEGAL)
    assert (s.name, same(s)) == ("prbench_legal_hard", expected[1:])
    with pytest.raises(EvalDataError, match="has splits legal, legal_hard; name one as .*:SPLIT"):
        load_set(str(saved), LEGAL)
    with pytest.raises(EvalDataError, match="has no split 'finance' \\(splits: legal, legal_hard\\)"):
        load_set(f"{saved}:finance", LEGAL)

    # hf:// goes through datasets.load_dataset: here a local folder of parquet files (a hub id on a cluster)
    hub = tmp_path / "PRBench"
    (hub / "data").mkdir(parents=True)
    ds.to_parquet(str(hub / "data" / "test-00000-of-00001.parquet"))
    s = load_set(f"hf://{hub}:test", LEGAL)
    assert (s.name, same(s)) == ("PRBench_test", expected)
    with pytest.raises(EvalDataError, match="could not be loaded with datasets.load_dataset"):
        load_set(f"hf://{tmp_path / 'nowhere'}:test", LEGAL)


def test_principia_bench_problem_statement_rows(tmp_path):
    rows = tmp_path / "principia_bench.jsonl"
    rows.write_text(json.dumps({"id": "pb-9", "problem_statement": "Find the eigenvalues of [[0, 1], [1, 0]].",
                                "answer": "The set {-1, 1}."}) + "\n")
    s = load_set(str(rows), build_domain(DomainConfig(name="principia", recall_openers=[])))
    (item,) = s.items
    assert s.format == "principia" and item.task.question.startswith("Find the eigenvalues")
    assert item.task.reference_answer == "The set {-1, 1}."


def test_a_folder_that_is_neither_a_run_nor_a_dataset_is_refused(tmp_path):
    with pytest.raises(EvalDataError, match="without heldout.jsonl and not a saved `datasets` folder"):
        load_set(str(tmp_path), LEGAL)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(EvalDataError, match="is not a .jsonl or .parquet file"):
        load_set(str(tmp_path / "notes.txt"), LEGAL)


def test_a_split_of_a_generate_run_dir_is_refused():
    run = Path(__file__).resolve().parent / "fixtures" / "train_run"
    with pytest.raises(EvalDataError, match="is a generate run dir, which has one held-out set and no splits"):
        load_set(f"{run}:heldout", build_domain(DomainConfig(name="cs")))
