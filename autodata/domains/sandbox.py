"""The Jinja environment every prompt template renders in: read-only, and limited while it runs.

A prompt template may be written by a model (``stage=meta_optimize`` evolves them), so one render must not
change anything outside its own output, run long or grow large. The limits hold for every template alike
(packaged, ``domain.template_dir``, a variant's), and are enforced during the render, not checked after it:

- Jinja's ``ImmutableSandboxedEnvironment``: no attribute that starts with "_", no method that changes a list,
  dict or set; ``PromptSet.messages`` hands the template deep copies of its variables besides, so even a method
  the sandbox does not know cannot reach the run's own objects.
- Operations: every attribute or item read, call, filter, arithmetic operator, ``~`` concatenation and loop
  step counts; a render stops after ``MAX_OPERATIONS`` of them, or after ``MAX_SECONDS`` of CPU time plus one
  second per ``CHARS_PER_SECOND`` characters of text it was given (fencing a long document takes a while:
  ``autodata.guard.document_flags`` reads all of it). Loop steps are counted by rewriting each ``for`` to
  iterate through a counter before compiling, so two nested loops with empty bodies stop like anything else.
- Size: the output is counted while the blocks stream, and every value an operator, call, filter,
  concatenation or macro makes is measured; none may exceed ``MAX_CHARS`` beyond twice the text the template
  was given. Operations whose result size follows from their arguments (``"a" * n``, ``x ** n``, a ``%`` or
  ``str.format`` width, the text-multiplying filters) are refused before they run.
- No helper globals but ``range`` (at most ``jinja2.sandbox.MAX_RANGE`` items): prompts need no ``lipsum``,
  ``cycler``, ``joiner``, ``namespace`` or ``dict``.

A render past a limit raises ``RenderLimit`` (a ``jinja2.exceptions.SecurityError``).
"""

from __future__ import annotations

import contextvars
import functools
import re
import string
import time
from contextlib import contextmanager
from typing import Any, Iterator, Optional

from jinja2 import nodes, pass_context
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEnvironment, safe_range
from jinja2.visitor import NodeTransformer

# Steps one render may take (attribute and item reads, calls, filters, operators, loop steps). A packaged
# prompt takes a few hundred; a hundred thousand take a few hundredths of a second.
MAX_OPERATIONS = 100_000
# CPU seconds one render may take (packaged prompts take milliseconds), and how much longer per character of text
# it was given (the fence filter scans a 100,000-character document in about a third of a second)
MAX_SECONDS = 1.0
CHARS_PER_SECOND = 100_000
# Characters a render may produce beyond twice the text its variables carry; also the largest value it may make
MAX_CHARS = 1_000_000
# Bits of an integer a template may compute (a 4096-bit number has 1234 digits)
MAX_INT_BITS = 4096

# Names of the filters the rewritten templates call (not meant for template authors; harmless if used)
_STEP_FILTER = "_autodata_steps"
_JOIN_FILTER = "_autodata_concat"


class RenderLimit(SecurityError):
    """A render went past a limit: too many operations, too much CPU time, or a value or output too large."""


class Budget:
    """What one render may still spend; ``PromptSet.messages`` opens one per render (``GuardedEnvironment.limits``)."""

    def __init__(self, max_chars: int, seconds: float):
        self.left = MAX_OPERATIONS
        self.max_chars = max_chars
        self.seconds = seconds
        self.deadline = time.thread_time() + seconds
        self.written = 0

    def tick(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise RenderLimit(f"the template took more than {MAX_OPERATIONS} operations (reads, calls, filters, "
                              "loop steps); a prompt needs a few hundred")
        # The clock is a system call (about a microsecond): read it every 16 steps
        if not self.left & 15 and time.thread_time() > self.deadline:
            raise RenderLimit(f"the template rendered for more than {self.seconds:.1f} s of CPU time")

    def allow(self, size: int, what: str) -> None:
        if size > self.max_chars:
            raise RenderLimit(f"{what} would be {size} characters or items (at most {self.max_chars})")

    def measure(self, value: Any, what: str = "a value the template made") -> Any:
        if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset, range)):
            self.allow(len(value), what)
        elif isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
            raise RenderLimit(f"the template made an integer of {value.bit_length()} bits (at most {MAX_INT_BITS})")
        return value

    def write(self, piece: str) -> str:
        self.written += len(piece)
        self.allow(self.written, "the rendered prompt")
        return piece


_current: contextvars.ContextVar[Optional[Budget]] = contextvars.ContextVar("autodata_render_budget", default=None)


def _budget() -> Budget:
    budget = _current.get()
    if budget is None:
        raise RenderLimit("a prompt template rendered outside a budget; render it through PromptSet.messages")
    return budget


def text_size(value: Any, depth: int = 0) -> int:
    """Characters of text in ``value`` (strings in lists, dicts and dataclasses, a few levels deep).

    >>> text_size({"document": "abc", "task": ["de", {"f": "g"}]})
    6
    """
    if isinstance(value, str):
        return len(value)
    if depth > 6:
        return 0
    if isinstance(value, dict):
        return sum(text_size(v, depth + 1) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(text_size(v, depth + 1) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return sum(text_size(getattr(value, f, None), depth + 1) for f in value.__dataclass_fields__)
    return 0


# ---------------------------------------------------------------------------------------------- size checks
_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0 +\-]*(\*|\d+)?(?:\.(\*|\d+))?")
_SPEC_NUMBERS = re.compile(r"\d+")


def printf_width(fmt: str) -> int:
    """The characters the widths and precisions of a ``%`` format ask for (``*`` counts as unlimited).

    >>> printf_width("%+d and %10.3f")
    13
    """
    total = 0
    for width, precision in _PRINTF.findall(fmt):
        for part in (width, precision):
            total += MAX_CHARS * 1000 if part == "*" else int(part or 0)
    return total


def format_width(fmt: str) -> int:
    """The same for a ``str.format`` string: the numbers of its format specs (a nested ``{}`` counts as unlimited).

    >>> format_width("{:>12} {0:.3f}")
    15
    """
    total = 0
    for _, _, spec, _ in string.Formatter().parse(fmt):
        if spec and "{" in spec:
            return MAX_CHARS * 1000
        total += sum(int(n) for n in _SPEC_NUMBERS.findall(spec or ""))
    return total


def _lines(value: Any) -> int:
    return str(value).count("\n") + 1


# Builtin filters whose output can be many times longer than their input: the size each would make, from its
# arguments, before it runs (every other filter's result is measured after it)
_GROWTH = {
    "format": lambda value, *a, **k: len(str(value)) + printf_width(str(value)),
    "join": lambda value, d="", *a, **k: (len(value) if hasattr(value, "__len__") else 0) * len(str(d)),
    "indent": lambda value, width=4, *a, **k: _lines(value) * (len(width) if isinstance(width, str) else int(width)),
    "replace": lambda value, old, new, count=None, *a, **k: (
        (str(value).count(str(old)) if old else len(str(value)) + 1) if count is None else int(count)) * len(str(new)),
    "wordwrap": lambda value, width=79, break_long_words=True, wrapstring=None, *a, **k: (
        len(str(value)) // max(int(width), 1) + _lines(value)) * len(wrapstring or "\n"),
    "center": lambda value, width=80, *a, **k: int(width),
}


def _check_arguments(budget: Budget, args: tuple, kwargs: dict) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > budget.max_chars:
            raise RenderLimit(f"the template passed the number {value} to a call or filter (at most "
                              f"{budget.max_chars})")


def _limited_filter(name: str, func: Any) -> Any:
    """``func`` counted, its arguments and result measured. The wrapper takes the context, which also keeps Jinja
    from running the filter at compile time on constant arguments (``"x" | center(10**9)`` would otherwise)."""
    kind = getattr(getattr(func, "jinja_pass_arg", None), "name", None)
    growth = _GROWTH.get(name)

    @pass_context
    @functools.wraps(func)
    def limited(context: Any, value: Any = None, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.tick()
        _check_arguments(budget, args, kwargs)
        if growth is not None:
            try:
                size = growth(value, *args, **kwargs)
            except (TypeError, ValueError):
                size = 0
            budget.allow(size, f"the {name} filter's result")
        lead = {"context": (context,), "eval_context": (context.eval_ctx,),
                "environment": (context.environment,)}.get(kind or "", ())
        return budget.measure(func(*lead, value, *args, **kwargs), f"the {name} filter's result")

    return limited


@pass_context
def _steps(context: Any, iterable: Any) -> Iterator[Any]:
    """A loop's items, each one counted (every ``for`` iterates through this)."""
    budget = _budget()
    budget.tick()
    for item in iterable:
        budget.tick()
        yield item


@pass_context
def _concat(context: Any, parts: list) -> str:
    """``a ~ b ~ c``, measured before it is joined."""
    budget = _budget()
    budget.tick()
    texts = [str(p) for p in parts]
    budget.allow(sum(len(t) for t in texts), "a ~ concatenation")
    return "".join(texts)


def _range(*args: int) -> range:
    _budget().tick()
    return safe_range(*args)


class _Metered(NodeTransformer):
    """Routes every loop through ``_steps`` and every ``~`` through ``_concat``, so both are counted."""

    def visit_For(self, node: nodes.For) -> nodes.For:
        node = self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, _STEP_FILTER, [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Filter:
        node = self.generic_visit(node)
        return nodes.Filter(nodes.List(node.nodes, lineno=node.lineno), _JOIN_FILTER, [], [], None, None,
                            lineno=node.lineno)


class GuardedEnvironment(ImmutableSandboxedEnvironment):
    """``ImmutableSandboxedEnvironment`` with a budget per render (see the module's docstring)."""

    intercepted_binops = frozenset(SandboxedEnvironment.default_binop_table)
    intercepted_unops = frozenset(SandboxedEnvironment.default_unop_table)

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.globals.clear()
        self.globals["range"] = _range
        self.filters[_STEP_FILTER] = _steps
        self.filters[_JOIN_FILTER] = _concat

    def limit_filters(self) -> None:
        """Wrap every filter (call once, after the project's own filters are added)."""
        for name, func in list(self.filters.items()):
            if name not in (_STEP_FILTER, _JOIN_FILTER):
                self.filters[name] = _limited_filter(name, func)

    @contextmanager
    def limits(self, given_chars: int) -> Iterator[Budget]:
        """The budget of one render whose variables carry ``given_chars`` characters of text: every hook of this
        environment spends from it until the block ends."""
        budget = Budget(MAX_CHARS + 2 * given_chars, MAX_SECONDS + given_chars / CHARS_PER_SECOND)
        token = _current.set(budget)
        try:
            yield budget
        except RecursionError:
            raise RenderLimit("the template nests calls too deep (a macro or loop that calls itself)") from None
        finally:
            _current.reset(token)

    # ------------------------------------------------------------------ compile: count loops and concatenations
    def compile(self, source: Any, name: Optional[str] = None, filename: Optional[str] = None, raw: bool = False,
                defer_init: bool = False) -> Any:
        if isinstance(source, str):
            source = self.parse(source, name, filename)
        source = _Metered().visit(source)
        source.set_environment(self)
        return super().compile(source, name, filename, raw=raw, defer_init=defer_init)

    # ------------------------------------------------------------------ sandbox hooks
    def concat(self, parts: Any) -> str:  # type: ignore[override]
        """What a macro, a call block or a ``set`` block wrote, measured before it is joined (Jinja collects their
        output in a list: a macro whose loop writes a long text many times would otherwise join it unchecked)."""
        texts = list(parts)
        _budget().allow(sum(len(t) for t in texts), "a macro's or block's output")
        return "".join(texts)

    def getattr(self, obj: Any, attribute: str) -> Any:
        budget = _budget()
        budget.tick()
        return budget.measure(super().getattr(obj, attribute), f"attribute {attribute!r}")

    def getitem(self, obj: Any, argument: Any) -> Any:
        budget = _budget()
        budget.tick()
        return budget.measure(super().getitem(obj, argument), "an item")

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's names
        budget = _budget()
        budget.tick()
        _check_arguments(budget, args, kwargs)
        for value in (*args, *kwargs.values()):
            budget.measure(value, "an argument")
        return budget.measure(super().call(__context, __obj, *args, **kwargs), "a call's result")

    def wrap_str_format(self, value: Any) -> Any:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = str(value.__self__)

        @functools.wraps(wrapped)
        def checked(*args: Any, **kwargs: Any) -> str:
            _budget().allow(len(fmt) + format_width(fmt), "a str.format result")
            return wrapped(*args, **kwargs)

        return checked

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = _budget()
        budget.tick()
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
                    budget.allow(len(seq) * max(n, 0), "a repeated value")
            if isinstance(left, int) and isinstance(right, int):
                self._bits(abs(left).bit_length() + abs(right).bit_length())
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
            self._bits(max(abs(left).bit_length() - 1, 1) * right)
        elif operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
            budget.allow(len(left) + len(right), "a sum of texts")
        elif operator == "%" and isinstance(left, str):
            budget.allow(len(left) + printf_width(left), "a % format result")
        return budget.measure(super().call_binop(context, operator, left, right), f"the result of {operator}")

    def call_unop(self, context: Any, operator: str, arg: Any) -> Any:
        _budget().tick()
        return super().call_unop(context, operator, arg)

    @staticmethod
    def _bits(bits: int) -> None:
        if bits > MAX_INT_BITS:
            raise RenderLimit(f"the template would compute an integer of about {bits} bits (at most "
                              f"{MAX_INT_BITS})")
