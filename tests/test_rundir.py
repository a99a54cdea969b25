"""The run dir's JSONL helpers: appends after a torn line, unreadable lines moved aside instead of dropped."""

from __future__ import annotations

import json
import logging

from autodata.rundir import JsonlWriter, read_jsonl, rewrite_jsonl, salvage_jsonl


def test_an_append_after_a_torn_last_line_starts_on_a_fresh_line(tmp_path):
    ledger = tmp_path / "documents.jsonl"
    # A kill mid-write: the last row lacks its end and its newline.
    ledger.write_text('{"document_id": "a"}\n{"document_id": "b"}\n{"document_id": "c", "sta')
    writer = JsonlWriter(ledger)
    writer.write({"document_id": "d"})
    writer.close()
    # The torn row is lost; the row appended after it is not glued onto it.
    assert [r["document_id"] for r in read_jsonl(ledger)] == ["a", "b", "d"]


def test_a_complete_file_gets_no_blank_line_before_an_append(tmp_path):
    path = tmp_path / "rows.jsonl"
    for _ in range(2):
        writer = JsonlWriter(path)
        writer.write({"x": 1})
        writer.close()
    assert path.read_text() == '{"x": 1}\n{"x": 1}\n'


def test_salvage_moves_unreadable_lines_to_a_side_file_and_keeps_the_rest(tmp_path, caplog):
    path = tmp_path / "accepted.jsonl"
    garbage = b'{"document_id": "b", "question": "\xff\xfe'
    path.write_bytes(b'{"document_id": "a"}\n' + garbage + b'\n[1, 2]\n\n{"document_id": "c"}\n')
    with caplog.at_level(logging.WARNING):
        rows = salvage_jsonl(path)
    assert [r["document_id"] for r in rows] == ["a", "c"]
    # The file is left readable, with only its good rows.
    assert [json.loads(line)["document_id"] for line in path.read_text().splitlines()] == ["a", "c"]
    moved = [json.loads(line) for line in (tmp_path / "accepted.jsonl.corrupt").read_text().splitlines()]
    assert [m["line"] for m in moved] == [2, 3] and all(m["moved_at"] for m in moved)
    # Nothing is lost: even bytes that are not UTF-8 come back exactly.
    assert moved[0]["text"].encode("utf-8", errors="surrogateescape") == garbage
    assert moved[1]["text"] == "[1, 2]"
    assert str(path) in caplog.text and "line 2, 3" in caplog.text and "accepted.jsonl.corrupt" in caplog.text

    # A second damaged line later is appended to the same side file.
    with path.open("a") as fh:
        fh.write("not json\n")
    assert len(salvage_jsonl(path)) == 2
    assert len((tmp_path / "accepted.jsonl.corrupt").read_text().splitlines()) == 3


def test_salvage_leaves_a_sound_file_untouched(tmp_path):
    path = tmp_path / "rounds.jsonl"
    rewrite_jsonl(path, [{"a": 1}, {"b": "é"}])
    before = path.read_bytes()
    assert salvage_jsonl(path) == [{"a": 1}, {"b": "é"}]
    assert path.read_bytes() == before and not (tmp_path / "rounds.jsonl.corrupt").exists()
    assert salvage_jsonl(tmp_path / "missing.jsonl") == []


def test_read_jsonl_names_the_line_it_skips(tmp_path, caplog):
    path = tmp_path / "train.jsonl"
    path.write_text('{"id": 1}\n{"id": 2, "torn\n{"id": 3}\n')
    with caplog.at_level(logging.WARNING):
        assert [r["id"] for r in read_jsonl(path)] == [1, 3]
    assert f"{path} line 2" in caplog.text
    # Reading never changes the file (it may be another run's input).
    assert path.read_text() == '{"id": 1}\n{"id": 2, "torn\n{"id": 3}\n'
