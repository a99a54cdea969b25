"""Eval set sources and formats: the PRBench release layout, principia-bench names, parquet files, saved
`datasets` folders (with a split) and hf:// names, each read into the same items."""

from __future__ import annotations

import json
import logging
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


def test_prbench_release_rows_are_read_as_the_official_harness_reads_them(caplog):
    with caplog.at_level(logging.WARNING, logger="eval.sets"):
        s = load_set(str(RELEASE), LEGAL)
    assert (s.name, s.format, [i.id for i in s.items]) == ("prbench_release", "prbench", ["prl-101", "prl-102"])
    first, second = s.items
    # weight_class "critically important" reads critically_important_weight; the stored signed value is used,
    # also the +2 of a "slightly detrimental" criterion whose sign contradicts its class
    assert [(c.weight, c.category) for c in first.task.rubric] == [
        (9, "Legal accuracy"), (5, "Practical advice"), (-6, "Risk"), (2, "Completeness")]
    assert [c.weight for c in second.task.rubric] == [8, 2, -8]
    # ... and one warning for the set, with the count
    (warning,) = [r.getMessage() for r in caplog.records if "contradicts" in r.getMessage()]
    assert "1 of 7 criteria have a weight whose sign contradicts their weight_class" in warning
    assert "task prl-101" in warning and "'slightly detrimental', weight +2" in warning
    # The judge grades the title; the annotator's rationale is kept aside, never the criterion
    c1 = first.task.rubric[0]
    assert c1.criterion == "States that a landlord may not deduct normal wear and tear from the deposit"
    assert c1.extra["description"].startswith("This criterion prevents fundamental errors")
    assert c1.extra["weight_class"] == "critically important"


def test_a_two_turn_release_row_becomes_real_chat_turns():
    first, second = load_set(str(RELEASE), LEGAL).items
    handbook = "Reference Text 0:\nEmployee handbook, section 4: final wages are paid on the next regular payday."
    assert second.task.earlier_messages == [
        {"role": "user", "content": handbook + "\n\nMy employer fired me on Friday and said my last check comes "
                                               "with the next payroll. Is that allowed?"},
        {"role": "assistant", "content": "It depends on your state: some require immediate payment on discharge, "
                                         "others allow the next payday."}]
    # The last prompt is the question; its turn's reference texts come before it
    assert second.task.question.startswith("I work in the state whose rule is quoted below")
    assert second.task.context == ("Reference Text 0:\nRule 12: wages of a discharged employee are due immediately."
                                   "\n\nReference Text 1:\nRule 13: each day wages stay unpaid adds a day's pay as "
                                   "a waiting-time penalty.")
    # The evaluated model gets the system prompt, then the turns, then the question as the last user message
    assert [m["role"] for m in second.prompt] == ["system", "user", "assistant", "user"]
    assert second.prompt[1:3] == second.task.earlier_messages
    last = second.prompt[-1]["content"]
    assert last.startswith("Reference Text 0:\nRule 12") and last.endswith("still have not paid me. What can I do?")
    # A single-turn task has no earlier messages and no context
    assert first.task.earlier_messages == [] and first.task.context == ""
    assert [m["role"] for m in first.prompt] == ["system", "user"]


def test_a_release_row_without_its_class_weight_is_an_error_naming_the_task(tmp_path):
    rows = release_rows()
    rows[1]["rubric"][1]["annotations"]["slightly_important_weight"] = None
    bad = tmp_path / "prbench_bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(EvalDataError, match="task prl-102: criterion of weight_class 'slightly important' has no "
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
