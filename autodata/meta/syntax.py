"""What a prompt template does with its data, read from its syntax tree: the structural half of the edit guards.

``read_template`` walks the ``system`` and ``user`` blocks of one entry template (following its imports and
inlining every macro it calls) and lists each *use* of a data variable: the expression, written canonically
(loop variables, ``set`` names and macro parameters replaced by what they stand for, so
``{% for g in groups %}{{ g.title }}`` called with ``feedback_groups`` reads ``feedback_groups[].title``), what
kind of use it is (shown, tested by an ``if`` or a conditional, looped over), which data variables it reads
outside a ``fence`` filter (what a ``{% filter ... | fence(tag) %}`` block shows is inside one), and the conditions
and loops around it. It also lists the template's vocabulary:
the statements, filters, tests, operators, imports, global names and non-macro calls its files use.

``compare`` holds a child to its parent, entry by entry. The child must

- still show every data expression its parent shows, under no condition or loop its parent's display lacks
  (so the document cannot move under ``{% if document|length < 4000 %}``);
- use data only in expressions its parent uses in the same role (no new test on the document, no new loop
  over it, no display that is not fenced where the parent fenced); a new display is allowed only when it just
  reads a value (a name, attribute or constant item through filters with constant arguments), fenced where the
  parent fences it;
- use nothing outside its parent's vocabulary (no ``range``, ``set``, ``namespace``, method call or new
  filter: an edit may rewrite the text and rearrange what its parent uses);
- call no macro that calls itself.

Data variables are the template's variables other than the run's settings (``cfg``, ``acceptance``): the
document, the task, earlier attempts and their diagnoses, scores and the rule that decided an outcome. The
guard (``edits.py``) takes their names from the variables the domain passes to each template.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional, Union

from jinja2 import nodes
from jinja2.exceptions import TemplateSyntaxError

from autodata.domains.templating import BLOCKS, fence, parse

# The filter that keeps text from outside inside its <tag> block, by the name templates call it
FENCE = fence.__name__
# Statements the reader may visit in one entry template, macros inlined (the packaged ones take a few hundred);
# a child whose macros call each other into an exponential tree is refused, not read for ever
MAX_STEPS = 20_000
# How Jinja's syntax tree names comparison operators, as a template writes them
_OPERATORS = {"eq": "==", "ne": "!=", "lt": "<", "lteq": "<=", "gt": ">", "gteq": ">=", "in": "in", "notin": "not in"}


@dataclass(frozen=True)
class Use:
    # "show" (printed; a conditional expression inside it makes it not plain), "test" (decides an if or a loop
    # filter), "loop" (iterated), "other" (anywhere else: an argument of a call block, a with, an include)
    kind: str
    expr: str
    # Data variables the expression reads, and those it reads outside a fence filter
    roots: frozenset
    unfenced: frozenset
    # The conditions and loops around it, outermost first ("if x", "else x", "for x", ...)
    where: tuple
    # The expression only reads a value (no condition, comparison, arithmetic or call inside it)
    plain: bool = True


@dataclass
class Reading:
    """What one entry template (with what it imports) does with its data."""

    uses: list[Use] = field(default_factory=list)
    vocabulary: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Val:
    text: str
    roots: frozenset = frozenset()
    unfenced: frozenset = frozenset()
    # Only reads a value: names, attributes, constant items, filters with constant arguments, ``~`` of such
    plain: bool = True


@dataclass(frozen=True)
class _Module:
    template: str


@dataclass(frozen=True)
class _MacroRef:
    key: str
    node: nodes.Macro
    scope: Any  # the env the macro was defined in


_Binding = Union[_Val, _Module, _MacroRef]
_NONE = frozenset()


class _Reader:
    def __init__(self, source_of: Callable[[str], Optional[str]], data: set[str], variables: set[str]):
        self.source_of = source_of
        self.data = data
        self.variables = variables
        self.reading = Reading()
        self.trees: dict[str, Optional[nodes.Template]] = {}
        self.stack: list[str] = []
        self.captures = 0
        self.steps = 0
        # Depth of ``{% filter fence(...) %}`` blocks around the statement being read: what they show is fenced
        self.fencing = 0

    # ------------------------------------------------------------------ files
    def tree(self, name: str) -> Optional[nodes.Template]:
        if name not in self.trees:
            self.trees[name] = None
            source = self.source_of(name)
            if source is None:
                self.reading.problems.append(f"imports {name}, which is not a template of this domain")
                return None
            try:
                tree = _parsed(source)
            except TemplateSyntaxError as err:
                self.reading.problems.append(f"{name} does not parse: {err}")
                return None
            self.trees[name] = tree
            self.reading.vocabulary |= _vocabulary(source, frozenset(self.variables))
            for node in tree.find_all((nodes.Import, nodes.FromImport)):
                if isinstance(node.template, nodes.Const) and isinstance(node.template.value, str):
                    self.tree(node.template.value)
        return self.trees[name]

    def module_env(self, name: str) -> dict[str, _Binding]:
        """The names a template defines at its top level (its macros and imports)."""
        env: dict[str, _Binding] = {}
        tree = self.trees.get(name)
        for node in tree.body if tree else []:
            self.bind_definition(node, env, name)
        return env

    def bind_definition(self, node: nodes.Node, env: dict, module: str) -> None:
        if isinstance(node, nodes.Macro):
            env[node.name] = _MacroRef(f"{module}:{node.name}", node, env)
        elif isinstance(node, nodes.Import):
            env[node.target] = _Module(_template_name(node.template))
        elif isinstance(node, nodes.FromImport):
            target = _template_name(node.template)
            exported = self.module_env(target) if self.tree(target) else {}
            for item in node.names:
                name, alias = item if isinstance(item, tuple) else (item, item)
                found = exported.get(name)
                env[alias] = found if isinstance(found, _MacroRef) else _Val(f"<{target}.{name}>")

    # ------------------------------------------------------------------ expressions
    def val(self, node: Optional[nodes.Node], env: dict) -> _Val:
        if node is None:
            return _Val("")
        if isinstance(node, nodes.Name):
            bound = env.get(node.name)
            if isinstance(bound, _Val):
                return bound
            if isinstance(bound, _Module):
                return _Val(f"<{bound.template}>")
            if isinstance(bound, _MacroRef):
                return _Val(f"<macro {bound.key}>")
            if node.name in self.data:
                return _Val(node.name, frozenset([node.name]), frozenset([node.name]))
            return _Val(node.name)
        if isinstance(node, nodes.Const):
            return _Val(repr(node.value))
        if isinstance(node, nodes.Getattr):
            base = self.val(node.node, env)
            return _Val(f"{base.text}.{node.attr}", base.roots, base.unfenced, base.plain)
        if isinstance(node, nodes.Getitem):
            value = self.join("{0}[{1}]", [node.node, node.arg], env)
            return replace(value, plain=self.val(node.node, env).plain and isinstance(node.arg, nodes.Const))
        if isinstance(node, (nodes.Filter, nodes.Test)):
            base = self.val(node.node, env)
            args = self.arguments(node, env)
            sign = "|" if isinstance(node, nodes.Filter) else " is "
            text = f"{base.text}{sign}{node.name}" + (f"({args.text})" if args.text else "")
            unfenced = args.unfenced if isinstance(node, nodes.Filter) and node.name == FENCE else \
                base.unfenced | args.unfenced
            constant = all(isinstance(a, nodes.Const) for a in [*node.args, *(k.value for k in node.kwargs)]) and \
                node.dyn_args is None and node.dyn_kwargs is None
            return _Val(text, base.roots | args.roots, unfenced,
                        isinstance(node, nodes.Filter) and base.plain and constant)
        if isinstance(node, nodes.Call):
            callee = self.val(node.node, env)
            args = self.arguments(node, env)
            return _Val(f"{callee.text}({args.text})", callee.roots | args.roots, callee.unfenced | args.unfenced,
                        False)
        if isinstance(node, nodes.Compare):
            parts = [self.val(node.expr, env)]
            text = parts[0].text
            for op in node.ops:
                value = self.val(op.expr, env)
                parts.append(value)
                text += f" {_OPERATORS.get(op.op, op.op)} {value.text}"
            return _merge(f"({text})", parts)
        if isinstance(node, nodes.BinExpr):
            return self.join(f"({{0}} {node.operator} {{1}})", [node.left, node.right], env)
        if isinstance(node, nodes.UnaryExpr):
            return self.join(f"({node.operator} {{0}})", [node.node], env)
        if isinstance(node, nodes.CondExpr):
            return self.join("({1} if {0} else {2})", [node.test, node.expr1, node.expr2], env)
        if isinstance(node, nodes.Concat):
            parts = [self.val(n, env) for n in node.nodes]
            return _merge("(" + " ~ ".join(p.text for p in parts) + ")", parts, all(p.plain for p in parts))
        if isinstance(node, (nodes.List, nodes.Tuple)):
            parts = [self.val(n, env) for n in node.items]
            return _merge("[" + ", ".join(p.text for p in parts) + "]", parts)
        # Anything else (dict literals, slices, keywords, ...) by its fields
        parts, texts = [], []
        for name, value in node.iter_fields():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, nodes.Node):
                    parts.append(self.val(item, env))
                    texts.append(f"{name}={parts[-1].text}")
                else:
                    texts.append(f"{name}={item!r}")
        return _merge(f"{type(node).__name__}({', '.join(texts)})", parts)

    def join(self, pattern: str, children: list, env: dict) -> _Val:
        parts = [self.val(c, env) for c in children]
        return _merge(pattern.format(*(p.text for p in parts)), parts)

    def arguments(self, node: Union[nodes.Call, nodes.Filter, nodes.Test], env: dict) -> _Val:
        parts = [self.val(a, env) for a in node.args]
        texts = [p.text for p in parts]
        for kw in node.kwargs:
            parts.append(self.val(kw.value, env))
            texts.append(f"{kw.key}={parts[-1].text}")
        for star, extra in (("*", node.dyn_args), ("**", node.dyn_kwargs)):
            if extra is not None:
                parts.append(self.val(extra, env))
                texts.append(star + parts[-1].text)
        return _merge(", ".join(texts), parts)

    # ------------------------------------------------------------------ statements
    def use(self, kind: str, node: nodes.Node, env: dict, where: tuple) -> str:
        value = self.val(node, env)
        if value.roots:
            unfenced = _NONE if kind == "show" and self.fencing else value.unfenced
            self.reading.uses.append(Use(kind, value.text, value.roots, unfenced, where, value.plain))
        return value.text

    def show(self, node: nodes.Expr, env: dict, where: tuple) -> None:
        macro = self.macro_of(node, env) if isinstance(node, nodes.Call) else None
        if macro is None:
            self.use("show", node, env, where)
            return
        if macro.key in self.stack:
            chain = " -> ".join([*self.stack[self.stack.index(macro.key):], macro.key])
            self.reading.problems.append(f"macro {macro.key} calls itself ({chain})")
            return
        scope = dict(macro.scope)
        params = [a.name for a in macro.node.args]
        given = [self.val(a, env) for a in node.args]
        named = {kw.key: self.val(kw.value, env) for kw in node.kwargs}
        defaults = dict(zip(params[len(params) - len(macro.node.defaults):], macro.node.defaults))
        for i, param in enumerate(params):
            if i < len(given):
                scope[param] = given[i]
            elif param in named:
                scope[param] = named[param]
            elif param in defaults:
                scope[param] = self.val(defaults[param], macro.scope)
            else:
                scope[param] = _Val(f"<missing {param}>")
        rest = given[len(params):] + [self.val(x, env) for x in (node.dyn_args, node.dyn_kwargs) if x is not None]
        scope["varargs"] = _merge("<varargs>", rest)
        scope["kwargs"] = _merge("<kwargs>", [v for k, v in named.items() if k not in params])
        self.stack.append(macro.key)
        self.walk(macro.node.body, scope, where)
        self.stack.pop()

    def macro_of(self, node: nodes.Call, env: dict) -> Optional[_MacroRef]:
        callee = node.node
        if isinstance(callee, nodes.Name) and isinstance(env.get(callee.name), _MacroRef):
            return env[callee.name]
        if isinstance(callee, nodes.Getattr) and isinstance(callee.node, nodes.Name):
            module = env.get(callee.node.name)
            if isinstance(module, _Module) and self.tree(module.template):
                found = self.module_env(module.template).get(callee.attr)
                return found if isinstance(found, _MacroRef) else None
        return None

    def walk(self, body: list, env: dict, where: tuple) -> None:
        for node in body:
            self.statement(node, env, where)

    def statement(self, node: nodes.Node, env: dict, where: tuple) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise _TooLarge()
        if isinstance(node, nodes.Output):
            for child in node.nodes:
                if not isinstance(child, nodes.TemplateData):
                    self.show(child, env, where)
        elif isinstance(node, nodes.If):
            self.branches(node, env, where)
        elif isinstance(node, nodes.For):
            iterated = self.use("loop", node.iter, env, where)
            items = self.val(node.iter, env)
            inner = dict(env, loop=_Val("loop"))
            targets = node.target.items if isinstance(node.target, nodes.Tuple) else [node.target]
            for i, target in enumerate(targets):
                suffix = "[]" if len(targets) == 1 else f"[][{i}]"
                if isinstance(target, nodes.Name):
                    inner[target.name] = _Val(f"{items.text}{suffix}", items.roots, items.unfenced, items.plain)
            around = (*where, f"for {iterated}")
            if node.test is not None:
                around = (*around, f"if {self.use('test', node.test, inner, around)}")
            self.walk(node.body, inner, around)
            self.walk(node.else_, dict(env), (*where, f"empty {iterated}"))
        elif isinstance(node, (nodes.Macro, nodes.Import, nodes.FromImport)):
            self.bind_definition(node, env, self.stack[-1].split(":")[0] if self.stack else "<block>")
        elif isinstance(node, nodes.Assign):
            self.assign(node.target, self.val(node.node, env), env)
        elif isinstance(node, nodes.AssignBlock):
            self.captures += 1
            self.walk(node.body, dict(env), (*where, f"captured by set #{self.captures}"))
            self.assign(node.target, _Val(f"<captured #{self.captures}>"), env)
        elif isinstance(node, nodes.With):
            inner = dict(env)
            for target, value in zip(node.targets, node.values):
                self.assign(target, self.val(value, env), inner)
            self.walk(node.body, inner, where)
        elif isinstance(node, nodes.FilterBlock):
            # A block whose last filter is the fence puts all it shows inside one data fence (QV's <task> block)
            fenced = isinstance(node.filter, nodes.Filter) and node.filter.name == FENCE
            self.fencing += fenced
            self.walk(node.body, dict(env), (*where, f"filter block {self.val(node.filter, env).text}"))
            self.fencing -= fenced
        elif isinstance(node, nodes.CallBlock):
            self.use("show", node.call, env, where)
            self.walk(node.body, dict(env), (*where, "call block"))
        elif isinstance(node, (nodes.Block, nodes.Scope, nodes.ScopedEvalContextModifier)):
            self.walk(node.body, dict(env), where)
        else:
            # Includes, expression statements and the rest: any data they read is an "other" use
            for child in node.iter_child_nodes():
                if isinstance(child, nodes.Expr):
                    self.use("other", child, env, where)
                elif isinstance(child, nodes.Stmt):
                    self.statement(child, env, where)

    def branches(self, node: nodes.If, env: dict, where: tuple) -> None:
        passed: tuple = ()
        arms = [(node.test, node.body), *((e.test, e.body) for e in node.elif_), (None, node.else_)]
        before = dict(env)
        changed: set[str] = set()
        for test, body in arms:
            inner = dict(before)
            if test is None:
                self.walk(body, inner, (*where, *passed))
            else:
                tested = self.use("test", test, env, (*where, *passed))
                self.walk(body, inner, (*where, *passed, f"if {tested}"))
                passed = (*passed, f"else {tested}")
            changed |= {k for k in inner if inner.get(k) != before.get(k)}
        # A name set in some branch holds one of several values afterwards: nothing a parent's expression matches
        for name in changed:
            env[name] = _Val(f"<{name} set in a branch>")

    def assign(self, target: nodes.Node, value: _Val, env: dict) -> None:
        if isinstance(target, nodes.Name):
            env[target.name] = value
        elif isinstance(target, nodes.Tuple):
            for i, item in enumerate(target.items):
                self.assign(item, _Val(f"{value.text}[{i}]", value.roots, value.unfenced, value.plain), env)


class _TooLarge(Exception):
    pass


# Parent and child share most of their files, and every entry reads them again: parse each text once. The reader
# never changes a tree, so one tree serves every reading.
_parsed = functools.lru_cache(maxsize=128)(parse)


@functools.lru_cache(maxsize=256)
def _vocabulary(source: str, variables: frozenset) -> frozenset:
    """The words of one template file's vocabulary (statements, filters, tests, operators, imports, global names,
    calls that are not of a macro); ``variables`` are the names it is given."""
    tree = _parsed(source)
    modules = {n.target for n in tree.find_all(nodes.Import)}
    macros = {n.name for n in tree.find_all(nodes.Macro)}
    for node in tree.find_all(nodes.FromImport):
        macros |= {item[1] if isinstance(item, tuple) else item for item in node.names}
    stored = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")} | modules | macros
    words: set[str] = set()
    for node in tree.find_all(nodes.Node):
        kind = type(node).__name__
        if isinstance(node, nodes.Filter):
            words.add(f"filter {node.name}")
        elif isinstance(node, nodes.Test):
            words.add(f"test {node.name}")
        elif isinstance(node, (nodes.BinExpr, nodes.UnaryExpr)):
            words.add(f"operator {node.operator}")
        elif isinstance(node, nodes.Operand):
            words.add(f"operator {_OPERATORS.get(node.op, node.op)}")
        elif isinstance(node, (nodes.Import, nodes.FromImport, nodes.Include, nodes.Extends)):
            words.add(f"{kind.lower()} {_template_name(node.template)}")
        elif isinstance(node, nodes.Block):
            words.add(f"block {node.name}")
        elif isinstance(node, nodes.For) and node.recursive:
            words.add("recursive loop")
        elif isinstance(node, nodes.Name) and node.ctx == "load" and node.name not in stored | variables:
            # ``loop`` is what every for binds; any other free name is a global (range, namespace, ...)
            if node.name != "loop":
                words.add(f"name {node.name}")
        elif isinstance(node, nodes.Call):
            callee = node.node
            # A macro of an imported template (m.history) or of this one (group_meaning); anything else is a call
            # of a Python method or function, which no packaged prompt makes
            macro = (isinstance(callee, nodes.Getattr) and isinstance(callee.node, nodes.Name)
                     and callee.node.name in modules) or (isinstance(callee, nodes.Name) and callee.name in macros)
            if not macro:
                words.add(f"call {'.' + callee.attr if isinstance(callee, nodes.Getattr) else _short(callee)}")
        if kind not in ("Filter", "Test", "Operand", "Import", "FromImport", "Include", "Extends", "Block"):
            words.add(kind)
    return frozenset(words)




def _merge(text: str, parts: list[_Val], plain: bool = False) -> _Val:
    roots = frozenset().union(*(p.roots for p in parts)) if parts else _NONE
    unfenced = frozenset().union(*(p.unfenced for p in parts)) if parts else _NONE
    return _Val(text, roots, unfenced, plain)


def _template_name(node: nodes.Node) -> str:
    return node.value if isinstance(node, nodes.Const) and isinstance(node.value, str) else "<computed name>"


def _short(node: nodes.Node) -> str:
    return node.name if isinstance(node, nodes.Name) else f"<{type(node).__name__}>"


def read_template(entry: str, source_of: Callable[[str], Optional[str]], data: set[str],
                  variables: set[str]) -> Reading:
    """What template file ``entry`` (e.g. "challenger.j2") does with ``data`` (the names of its data
    variables; ``variables`` are all the names it is given). ``source_of`` gives a template's text by file name
    (None when there is none), as the domain's search path resolves it."""
    reader = _Reader(source_of, set(data), set(variables))
    tree = reader.tree(entry)
    try:
        for block in tree.find_all(nodes.Block) if tree else []:
            if block.name in BLOCKS:
                reader.walk(block.body, reader.module_env(entry), ())
    except _TooLarge:
        reader.reading.problems.append(f"takes more than {MAX_STEPS} statements to read with its macros inlined "
                                       "(macros that call each other many times over)")
    return reader.reading


def compare(name: str, parent: Reading, child: Reading) -> list[str]:
    """Why the child's ``name`` template may not replace the parent's (empty when it may)."""
    problems = [f"{name} {p}" for p in child.problems if p not in parent.problems]
    # An expression the parent shows inside a fence block and the child outside it is not the same use
    made = {(u.kind, u.expr, u.unfenced) for u in parent.uses}
    shown = {r for u in parent.uses if u.kind == "show" for r in u.roots}
    fenced = shown - {r for u in parent.uses if u.kind == "show" for r in u.unfenced}
    verbs = {"show": "shows", "test": "decides on", "loop": "loops over", "other": "uses"}
    for use in child.uses:
        if (use.kind, use.expr, use.unfenced) in made:
            continue
        outside = sorted(use.unfenced & fenced)
        if use.kind == "show" and use.plain and outside:
            problems.append(f"{name} shows {', '.join(outside)} outside its data fence ({{{{ {use.expr} }}}}): text "
                            "from outside must stay in its <tag> block, through the fence filter")
        elif use.kind == "show" and use.plain:
            # One more display of a value (a field the parent showed formatted, shown plain) hides nothing: what
            # the parent shows is still required below, and a condition in it would not be plain
            continue
        else:
            problems.append(f"{name} {verbs[use.kind]} {', '.join(sorted(use.roots))} in a way its parent does not "
                            f"({use.expr}); an edit may use the data only as its parent does")
    for use in parent.uses:
        if use.kind != "show":
            continue
        same = [u for u in child.uses if u.kind == "show" and u.expr == use.expr]
        if any(set(u.where) <= set(use.where) for u in same):
            continue
        what = f"{', '.join(sorted(use.roots))} ({{{{ {use.expr} }}}})"
        if not same:
            problems.append(f"{name} no longer shows {what}, a variable the prompt needs")
        else:
            extra = sorted(set(same[0].where) - set(use.where))
            problems.append(f"{name} shows {what} only under {'; '.join(extra)}, where its parent shows it "
                            f"{'under ' + '; '.join(use.where) if use.where else 'always'}")
    new = sorted(child.vocabulary - parent.vocabulary)
    if new:
        problems.append(f"{name} (with what it imports) uses what its parent's templates do not: {', '.join(new)}; "
                        "an edit may rewrite the text and rearrange what its parent uses, nothing else")
    return list(dict.fromkeys(problems))
