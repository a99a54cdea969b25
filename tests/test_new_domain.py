"""``autodata new-domain NAME [--dir DIR]``: writes a starting folder domain that loads and builds as written,
with a comment on every key; never overwrites a folder (exit 2); reached from the console script's dispatch."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from autodata import new_domain, run
from autodata.config import DomainConfig
from autodata.domains import build_domain, resolve_config

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = [ROOT / "autodata/domains/folders/starter", ROOT / "autodata/domains/folders/finance"]
# Keys of a `fields:` item that the block comment above `fields:` documents once for every item
FIELD_KEYS_DOCUMENTED_ONCE = {"name", "type", "description", "visible_to", "column"}
KEY = re.compile(r"^(\s*)(- )?([A-Za-z_]+):")


def cli(monkeypatch, *argv: str) -> int:
    """``autodata <argv>`` in this process; its exit code."""
    monkeypatch.setattr(sys, "argv", ["autodata", *argv])
    with pytest.raises(SystemExit) as exit_:
        run.main()
    return exit_.value.code


def uncommented_keys(text: str) -> list[str]:
    """Keys of a domain.yaml without a comment line directly above them (fields' shared keys excepted)."""
    missing, previous, in_fields = [], "", False
    for number, line in enumerate(text.splitlines(), 1):
        key = KEY.match(line)
        if key:
            indent, item, name = key.groups()
            if not indent and not item:
                in_fields = name == "fields"
            documented = previous.lstrip().startswith("#")
            if not documented and not (in_fields and indent and name in FIELD_KEYS_DOCUMENTED_ONCE):
                missing.append(f"{name} (line {number})")
        if line.strip():
            previous = line
    return missing


def test_the_comment_check_finds_a_bare_key():
    assert uncommented_keys("# why\na: 1\nb: 2\nfields:\n  - name: x\n    values: [a]\n") == [
        "b (line 3)", "fields (line 4)", "values (line 6)"]


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_every_key_of_a_shipped_folder_is_commented(folder):
    text = (folder / "domain.yaml").read_text()
    assert uncommented_keys(text) == []
    # The file opens with the command that launches it
    assert text.startswith(f"# python -m autodata.run stage=generate domain=folder domain.path="
                           f"autodata/domains/folders/{folder.name} ")


def test_the_written_folder_loads_and_builds(monkeypatch, tmp_path):
    assert cli(monkeypatch, "new-domain", "medicine", "--dir", str(tmp_path / "domains")) == 0
    folder = tmp_path / "domains" / "medicine"
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in SHIPPED[0].iterdir()
                                                              if p.name != "__pycache__")
    text = (folder / "domain.yaml").read_text()
    assert uncommented_keys(text) == []
    assert f"domain.path={folder} " in text.splitlines()[0]
    domain = build_domain(resolve_config(DomainConfig(name="folder", path=str(folder))))
    assert (domain.name, domain.grading) == ("medicine", "rubric")
    messages = domain.challenger_messages("Aspirin inhibits platelet aggregation for the life of the platelet.", [],
                                          "agentic")
    assert "Aspirin inhibits" in messages[-1]["content"] and '"rubric": [' in messages[-1]["content"]


def test_an_existing_folder_is_never_overwritten(monkeypatch, tmp_path, capsys):
    (tmp_path / "medicine").mkdir()
    (tmp_path / "medicine" / "domain.yaml").write_text("name: mine\n")
    assert cli(monkeypatch, "new-domain", "medicine", "--dir", str(tmp_path)) == 2
    assert "already exists; new-domain never overwrites" in capsys.readouterr().err
    assert (tmp_path / "medicine" / "domain.yaml").read_text() == "name: mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["medicine"]


def test_a_name_that_cannot_be_a_domain_name_is_refused_with_one_that_can(tmp_path, capsys):
    assert new_domain.main(["first aid", "--dir", str(tmp_path)]) == 2
    assert "autodata new-domain first_aid" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_cli_help_lists_the_command_and_the_command_has_its_own(monkeypatch, capsys):
    assert "autodata new-domain NAME [--dir DIR]" in run.help_text()
    assert cli(monkeypatch, "new-domain", "--help") == 0
    assert capsys.readouterr().out.startswith("usage: autodata new-domain [-h] [--dir DIR] NAME")
