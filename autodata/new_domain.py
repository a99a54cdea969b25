"""``autodata new-domain NAME [--dir DIR]``: write a starting folder domain to DIR/NAME.

    autodata new-domain medicine                      # ./medicine: domain.yaml and templates, every key commented
    autodata new-domain medicine --dir domains        # ./domains/medicine
    autodata stage=generate domain=folder domain.path=medicine corpus=jsonl corpus.path=notes.jsonl

The folder is a copy of the packaged starter (autodata/domains/folders/starter: a rubric-graded domain whose
prompts describe the fields domain.yaml declares) with its name set to NAME; it runs as written, and every key
of its domain.yaml says what it does. An existing folder is never overwritten (exit 2), so a second run cannot
destroy edits.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

STARTER = Path(__file__).parent / "domains" / "folders" / "starter"
# --help of `autodata` lists this line
SUMMARY = ("autodata new-domain NAME [--dir DIR]: write a starting folder domain (domain.yaml and templates, "
           "every key commented) to DIR/NAME")


def write_domain(name: str, parent: Path, starter: Path = STARTER) -> Path:
    """Copy ``starter`` to ``parent/name`` with domain.yaml's ``name`` (and its launch command) set to ``name``;
    returns the new folder. Raises ValueError (the message says what to do) for a bad name or an existing folder.
    """
    # The rule domain.yaml's `name` key is read with, so the written folder loads
    from autodata.domains.folder_spec import DOMAIN_NAME

    if not DOMAIN_NAME.match(name):
        raise ValueError(f"domain name {name!r} is not usable: a name is letters, digits, _ and -, starting with a "
                         f"letter or digit (it becomes the dataset's \"domain\" column); e.g. autodata new-domain "
                         f"{re.sub(r'[^A-Za-z0-9_-]+', '_', name).strip('_-') or 'my_domain'}")
    target = parent / name
    if target.exists():
        raise ValueError(f"{target} already exists; new-domain never overwrites a folder. Pick another NAME or "
                         f"--dir, or delete {target} first if you mean to start over")
    spec = (starter / "domain.yaml").read_text(encoding="utf-8")
    spec, named = re.subn(r"^name: .*$", f"name: {name}", spec, count=1, flags=re.M)
    if not named:
        raise RuntimeError(f"{starter / 'domain.yaml'} has no top-level `name:` line to set")
    # The launch command on the first line points at the copy, as the user will type it
    spec = re.sub(r"domain\.path=\S+", lambda _: f"domain.path={target}", spec, count=1)
    parent.mkdir(parents=True, exist_ok=True)
    # Copied to a temporary sibling, then renamed: an interrupted copy leaves no half-written folder at target
    partial = parent / f".{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(starter, partial, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (partial / "domain.yaml").write_text(spec, encoding="utf-8")
    partial.rename(target)
    return target


def main(argv: list[str] | None = None) -> int:
    """The subcommand; returns the exit code: 0 written, 2 refused (the message says why)."""
    parser = argparse.ArgumentParser(
        prog="autodata new-domain",
        description="Write a starting folder domain (domain.yaml plus prompt templates, every key commented) to "
                    "DIR/NAME, then run it with: autodata stage=generate domain=folder domain.path=DIR/NAME")
    parser.add_argument("name", metavar="NAME", help="the domain's name: letters, digits, _ and -")
    parser.add_argument("--dir", default=".", metavar="DIR", help="the folder to write NAME into (default: .)")
    args = parser.parse_args(argv)
    try:
        target = write_domain(args.name, Path(args.dir))
    except ValueError as err:
        print(f"autodata new-domain: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"autodata new-domain: cannot write {Path(args.dir) / args.name} ({err.strerror}: {err.filename}); "
              f"pick a --dir you can write to", file=sys.stderr)
        return 2
    print(f"wrote {target}/ (domain.yaml and its templates). Next:\n"
          f"  1. edit {target}/domain.yaml: the description, the fields and the rubric limits (each key says what "
          f"it does)\n"
          f"  2. autodata stage=generate domain=folder domain.path={target} corpus=jsonl corpus.path=YOUR_DOCS.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
