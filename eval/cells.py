"""Report cells: one of our numbers beside the paper's, and how a cell is written.

Shared by the report and its sections (``eval/report.py``, ``eval/report_tables.py``, ``eval/flips.py``,
``eval/report_plots.py``), with how a cell's eval run is read (``parse_spec``, ``load_run_metrics``).
It lives apart from ``eval/report.py`` so that the sections import it rather than the report that
imports them: no import circle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from autodata.config import RootConfig, to_typed

MISSING = "missing"


class ReportError(ValueError):
    pass


@dataclass
class Cell:
    row: str
    column: str
    metric: str
    ours: Optional[float]
    stderr: Optional[float]
    paper: Optional[float]
    # Where our number comes from, or why it is missing
    source: str
    # Samples of the run's set, and how many of them its judge could not grade (excluded from the metric)
    samples: Optional[int] = None
    judge_failures: Optional[int] = None
    # The run (RUN#SET[@JUDGE]) the cell reads; unlike source, never a reason about another metric or row
    run: str = ""
    # What ours averages (prompts, completions, examples, rounds, flips); None where no count applies (a count
    # itself, like the meta-optimizer's iterations)
    n: Optional[int] = None

    def __post_init__(self) -> None:
        # A standard error over fewer than two values is undefined, whatever the file it came from says (eval's
        # metrics.json stores 0.0 for one prompt)
        if self.n is not None and self.n < 2:
            self.stderr = None

    @property
    def diff(self) -> Optional[float]:
        return None if self.ours is None or self.paper is None else self.ours - self.paper

    @property
    def stderr_text(self) -> str:
        """The standard error as report.csv writes it: "" without a value or a count, "n/a" when undefined.

        >>> one, four = Cell("r", "c", "m", 0.5, 0.0, None, "x", n=1), Cell("r", "c", "m", 0.5, 0.1, None, "x", n=4)
        >>> one.stderr_text, four.stderr_text
        ('n/a', '0.100000')
        """
        if self.stderr is not None:
            return f"{self.stderr:.6f}"
        return "n/a" if self.ours is not None and self.n is not None else ""


def parse_spec(spec: str) -> tuple[str, str, str]:
    """``RUN_DIR[#SET][@JUDGE]`` -> (run dir, set, judge role); set and judge may be empty.

    >>> parse_spec("runs/eval_legal#prbench_legal@judge_kimi")
    ('runs/eval_legal', 'prbench_legal', 'judge_kimi')
    >>> parse_spec("runs/eval_base")
    ('runs/eval_base', '', '')
    """
    head, slash, tail = spec.rpartition("/")
    tail, _, judge = tail.partition("@")
    path_text, _, dataset = (head + slash + tail).partition("#")
    return path_text, dataset, judge


def load_run_metrics(spec: str) -> tuple[Optional[dict[str, Any]], str]:
    """The metrics of one set (and judge) of an eval run, or None and the reason it is missing."""
    path_text, dataset, judge = parse_spec(spec)
    metrics_path = Path(path_text) / "metrics.json"
    if not metrics_path.exists():
        return None, f"{metrics_path} not found (run stage=eval with hydra.run.dir={path_text})"
    try:
        sets = json.loads(metrics_path.read_text())["datasets"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        return None, (f"{metrics_path} is not an eval metrics file ({type(err).__name__}: {err}); rerun stage=eval "
                      f"with hydra.run.dir={path_text} to rewrite it from samples.jsonl")
    if dataset:
        if dataset not in sets:
            return None, f"{metrics_path} has no set {dataset!r} (sets: {', '.join(sorted(sets))})"
        name = dataset
    elif len(sets) != 1:
        return None, (f"{metrics_path} has {len(sets)} sets ({', '.join(sorted(sets))}); name one as "
                      f"{path_text}#SET")
    else:
        (name,) = sets
    values = sets[name]
    if not judge:
        return values, f"{path_text}#{name}"
    by_judge = values.get("by_judge", {})
    if judge not in by_judge:
        return None, (f"{metrics_path} set {name!r} was not graded by judge {judge!r} (judges: "
                      f"{', '.join(sorted(by_judge)) or 'none recorded'}); add it to eval.judges and rerun eval "
                      f"with hydra.run.dir={path_text}")
    return {**values, **by_judge[judge]}, f"{path_text}#{name}@{judge}"


def run_config(run_dir: Path) -> Optional[RootConfig]:
    """The config a run recorded (``config.yaml``), or None when it has none or it does not read.

    A run made by an earlier version may hold keys this version no longer has: those are dropped (the report reads
    models, experiment, domain and method, which every version records), one at a time as the schema names them.
    """
    from omegaconf.errors import OmegaConfBaseException

    path = run_dir / "config.yaml"
    if not path.exists():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    for _ in range(100):
        try:
            return to_typed(data)
        except OmegaConfBaseException as err:
            if not _drop(data, str(getattr(err, "full_key", "") or "")):
                return None
    return None


def _drop(data: Any, key: str) -> bool:
    """Remove a dotted key from nested dicts; False when it is not there.

    >>> d = {"meta": {"recheck_parent": True, "iterations": 2}}
    >>> _drop(d, "meta.recheck_parent"), d, _drop(d, "meta.nothing")
    (True, {'meta': {'iterations': 2}}, False)
    """
    *parents, last = key.split(".") if key else [""]
    for part in parents:
        data = data.get(part) if isinstance(data, dict) else None
    if not isinstance(data, dict) or last not in data:
        return False
    del data[last]
    return True


def read_accepted(run_dir: Path) -> Optional[list[dict[str, Any]]]:
    path = run_dir / "accepted.jsonl"
    if not path.exists():
        return None
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _num(x: Optional[float], signed: bool = False, digits: int = 3) -> str:
    if x is None:
        return "-"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def ours_text(cell: Cell, digits: int = 3) -> str:
    """Our value, its standard error and n; "n/a" where the standard error is undefined (n < 2), never 0.

    >>> ours_text(Cell("base", "cs", "mean_at_3", 0.5, 0.1, 0.4, "runs/x", n=100), digits=2)
    '0.50 ± 0.10 (n=100)'
    >>> ours_text(Cell("base", "cs", "mean_at_3", 0.143, 0.0, 0.4, "runs/x", n=1))
    '0.143 ± n/a (n=1)'
    >>> ours_text(Cell("base", "cs", "mean_at_3", 0.5, None, 0.4, "runs/x"), digits=2)
    '0.50'
    >>> ours_text(Cell("agentic", "cs", "share_too_easy", None, None, 0.8, "no rejected round", n=0))
    'n/a (n=0)'
    """
    if cell.ours is None:
        # A run that was read but has nothing to average: undefined, not missing
        return "n/a (n=0)" if cell.n == 0 else MISSING
    text = f"{cell.ours:.{digits}f}"
    if cell.n is None:
        return text if cell.stderr is None else f"{text} ± {cell.stderr:.{digits}f}"
    error = "n/a" if cell.stderr is None else f"{cell.stderr:.{digits}f}"
    return f"{text} ± {error} (n={cell.n})"


def cell_text(cell: Cell, digits: int = 3) -> str:
    """
    >>> cell_text(Cell("base", "cs", "mean_at_3", 0.5, 0.1, 0.4, "runs/x", n=30), digits=2)
    '0.50 ± 0.10 (n=30) (paper 0.40, diff +0.10)'
    >>> cell_text(Cell("base", "cs", "mean_at_3", None, None, 0.4, "no run"), digits=2)
    'missing (paper 0.40, diff -)'
    """
    return (f"{ours_text(cell, digits)} (paper {_num(cell.paper, digits=digits)}, "
            f"diff {_num(cell.diff, signed=True, digits=digits)})")
