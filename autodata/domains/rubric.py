"""Rubric-graded domains (cs, legal): the binary per-criterion judge and rubric rules.

The judge marks each criterion met or not (met only when completely and
unambiguously satisfied; a negative criterion is met when the bad behaviour is
present). The framework turns the verdicts into a score with
``scoring.rubric_score``; the judge never gives an overall score.
"""

from __future__ import annotations

from typing import Any, Callable

from autodata.domains import checks
from autodata.domains.base import Criterion, Domain, Fields, Grade, Task, object_schema
from autodata.scoring import rubric_score


def judge_schema(n: int) -> dict[str, Any]:
    """One {id, met} verdict per criterion: exactly n items, ids 1..n.

    >>> judge_schema(12)["properties"]["verdicts"]["maxItems"]
    12
    """
    verdict = object_schema({
        "id": {"type": "integer", "minimum": 1, "maximum": n},
        "met": {"type": "boolean"},
    })
    return object_schema({"verdicts": {"type": "array", "items": verdict, "minItems": n, "maxItems": n}})


class RubricDomain(Domain):
    """Shared judge, grade parser and rubric structure rules of rubric domains."""

    grading = "rubric"

    def weight_schema(self) -> dict[str, Any]:
        low = 1 if self.cfg.positive_only else -self.cfg.max_weight
        return {"type": "integer", "minimum": low, "maximum": self.cfg.max_weight}

    def rubric_array(self, item: dict[str, Any]) -> dict[str, Any]:
        return {"type": "array", "items": item, "minItems": self.cfg.rubric_min, "maxItems": self.cfg.rubric_max}

    # ----------------------------------------------------------------- judge
    def judge_messages(self, task: Task, answer: str) -> list[dict]:
        criteria = [
            {"id": i, "text": c.criterion, "penalty": c.weight < 0} for i, c in enumerate(task.rubric, start=1)
        ]
        return self.prompts.messages("judge", task=task, answer=answer, criteria=criteria,
                                     show_reference=self.cfg.judge_sees_reference)

    def judge_schema(self, task: Task) -> dict[str, Any]:
        return judge_schema(len(task.rubric))

    def parse_grade(self, task: Task, obj: dict) -> Grade:
        n = len(task.rubric)
        f = Fields(obj, "judge output")
        items = f.array("verdicts", min_items=n, max_items=n)
        verdicts: dict[int, bool] = {}
        for i, item in enumerate(items):
            path = f"verdicts[{i}]"
            if not isinstance(item, dict):
                f.problems.append(f"{path}: expected an object {{id, met}}, found {item!r}")
                continue
            cid = f.integer("id", obj=item, path=f"{path}.id")
            met = f.boolean("met", obj=item, path=f"{path}.met")
            if not 1 <= cid <= n:
                f.problems.append(f"{path}.id: expected a criterion id between 1 and {n}, found {cid}")
            elif cid in verdicts:
                f.problems.append(f"{path}.id: criterion {cid} was judged twice; give one verdict per criterion")
            else:
                verdicts[cid] = met
        if not f.problems:
            missing = [i for i in range(1, n + 1) if i not in verdicts]
            if missing:
                f.problems.append(f"verdicts: no verdict for criteria {missing}")
        f.raise_if_any()
        met_list = [verdicts[i] for i in range(1, n + 1)]
        score = rubric_score([c.weight for c in task.rubric], met_list)
        return Grade(score=score, met=met_list, raw=obj)

    # ----------------------------------------------------------------- rubric rules
    def parse_rubric(self, f: Fields, shape: str,
                     extra: Callable[[dict, str], dict[str, Any]] = lambda item, path: {}) -> list[Criterion]:
        """The challenger's ``rubric`` array as criteria; each problem goes to ``f.problems`` with its path.

        ``shape`` names the expected object in the error (``{criterion, weight, category}``); ``extra``
        reads a domain's further fields of one item (given the item and its path).
        """
        rubric = []
        for i, item in enumerate(f.array("rubric", min_items=1)):
            path = f"rubric[{i}]"
            if not isinstance(item, dict):
                f.problems.append(f"{path}: expected an object {shape}, found {item!r}")
                continue
            rubric.append(Criterion(
                criterion=f.text("criterion", obj=item, path=f"{path}.criterion"),
                weight=f.integer("weight", obj=item, path=f"{path}.weight"),
                category=f.text("category", obj=item, path=f"{path}.category", allow_empty=True),
                extra=extra(item, path),
            ))
        return rubric

    def rubric_problems(self, rubric: list[Criterion]) -> list[str]:
        cfg, problems = self.cfg, []
        n = len(rubric)
        if not cfg.rubric_min <= n <= cfg.rubric_max:
            problems.append(f"rubric has {n} criteria; write between {cfg.rubric_min} and {cfg.rubric_max}")
        positive = [c for c in rubric if c.weight > 0]
        negative = [c for c in rubric if c.weight < 0]
        zero = [i for i, c in enumerate(rubric, start=1) if c.weight == 0]
        if zero:
            problems.append(f"criteria {zero} have weight 0, which counts for nothing; give each a nonzero weight")
        too_heavy = [i for i, c in enumerate(rubric, start=1) if abs(c.weight) > cfg.max_weight]
        if too_heavy:
            problems.append(f"criteria {too_heavy} have |weight| above {cfg.max_weight}; "
                            f"keep weights within -{cfg.max_weight}..{cfg.max_weight}")
        if len(positive) < cfg.min_positive:
            problems.append(f"rubric has {len(positive)} positive criteria; write at least {cfg.min_positive}")
        if cfg.positive_only and negative:
            problems.append(f"rubric has {len(negative)} negative criteria but this run uses positive-only "
                            "rubrics; rewrite them as positive criteria")
        elif not cfg.positive_only and len(negative) < cfg.min_negative:
            problems.append(f"rubric has {len(negative)} negative criteria; write at least {cfg.min_negative} "
                            "that name specific mistakes")
        seen: dict[str, int] = {}
        for i, c in enumerate(rubric, start=1):
            key = checks.normalized(c.criterion)
            if key in seen:
                problems.append(f"criterion {i} repeats criterion {seen[key]}; each criterion checks one distinct thing")
            seen.setdefault(key, i)
        return problems
