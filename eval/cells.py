"""Report cells: one of our numbers beside the paper's, and how a cell is written.

Shared by the report and its sections (``eval/report.py``, ``eval/report_tables.py``, ``eval/flips.py``).
It lives apart from ``eval/report.py`` so that the sections import it rather than the report that
imports them: no import circle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

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

    @property
    def diff(self) -> Optional[float]:
        return None if self.ours is None or self.paper is None else self.ours - self.paper


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


def _num(x: Optional[float], signed: bool = False, digits: int = 3) -> str:
    if x is None:
        return "-"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def cell_text(cell: Cell, digits: int = 3) -> str:
    """
    >>> cell_text(Cell("base", "cs", "mean_at_3", 0.5, 0.1, 0.4, "runs/x"), digits=2)
    '0.50 ± 0.10 (paper 0.40, diff +0.10)'
    >>> cell_text(Cell("base", "cs", "mean_at_3", None, None, 0.4, "no run"), digits=2)
    'missing (paper 0.40, diff -)'
    """
    ours = MISSING if cell.ours is None else f"{cell.ours:.{digits}f} ± {cell.stderr or 0.0:.{digits}f}"
    return f"{ours} (paper {_num(cell.paper, digits=digits)}, diff {_num(cell.diff, signed=True, digits=digits)})"
