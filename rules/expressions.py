"""The rule language's expressions: a small, safe subset of Python, compiled once per pack load.

Rule authors write conditions and values such as ``type == "item.picked" and data.qty >= 2``,
``data.qty * price(data.sku)`` or templates such as ``"Waited {wait_s:.0f} s at {data.zone}"``.
:func:`compile_expr` and :func:`compile_template` turn them into :class:`Expr` values whose
``fn(scope)`` is evaluated per event on the hot path.

What is allowed
    Literals (str, int, float, bool, None), list / tuple / set displays, names, attribute access
    ``a.b.c``, subscription ``x[0]``, ``labels["k"]`` and slices (``x[1:3]``, ``x[::2]``: steps
    are allowed, they are harmless), comparisons (chained too), ``in`` / ``not in``, ``is None``
    / ``is not None``, ``and`` / ``or`` / ``not``, ``+ - * / // % **`` and unary ``-`` / ``+``,
    ``a if c else b``, and calls of the pack's functions by plain name with positional and
    keyword arguments. Everything else is refused at compile time with ``file:line:col`` and
    one sentence saying what is allowed: attributes or names starting with ``_`` (and a few
    interpreter internals such as ``f_globals`` or ``gi_frame``), lambda, comprehensions and
    generator expressions, ``:=``, f-strings, ``*`` / ``**`` unpacking, calls of anything but
    a plain function name (no methods), dict displays, bitwise operators, ``is`` with anything
    but ``None``, ``await`` / ``yield``, statements, imports, bytes and complex literals.

    Nothing in the subset can reach an attribute beginning with ``_``, import, or call
    anything that the pack did not hand over in ``functions``. No method either, as a call or
    as a value: an attribute naming a method of any value type is refused, attributes apply
    only to what is read from the scope, and functions take only their vetted keywords (no
    ``key=`` for ``min``, which would call ``staff.add``), so no function is handed a callable.

    Work per event is bounded (docs/rules.md, "Limits"): ``**``, ``*`` and ``%`` go through
    guards (integers of at most 100 000 bits, repetitions of at most 100 000 items, the
    strings and lists inside a repeated list counted whole, '%'-widths of at most 1000), as
    does ``round``; template specs are checked at compile time. Operators on constants are
    folded here, so a literal past a limit is a compile error.

Names and the scope
    A free name is either a scope name (in ``names``), read as an attribute of the scope
    object (``type`` -> ``scope.type``: the engine passes the event itself or a small
    ``__slots__`` object), or a constant (in ``constants``; bound at compile time, never read
    from the scope: a name in both is a constant). ``Expr.names`` lists both kinds the
    expression reads; ``Expr.paths`` lists the attribute paths it reads from *scope* names
    only (``data.labels["k"]`` gives ``("data", "labels")``), so the engine can check them
    against event schemas; ``Expr.calls`` lists the functions it calls.

    ``x in K`` where ``K`` is a list / tuple / set constant (or a list literal of constants)
    is compiled against a frozenset of it: the same answer for every hashable ``x``, in
    constant time (an unhashable ``x`` raises an EvaluationError instead of giving False).

Compilation strategy
    The validated AST is rewritten (scope names to ``_s.<name>``, constants and functions to
    closure cells, ``**`` to the guard) and compiled with ``compile()`` into one plain Python
    function that loads no global or builtin name at all (its builtins hold only
    ``__import__``, which C code such as ``datetime.strftime`` needs from the calling frame).
    One such function costs about what a hand-written lambda does
    (``bench/micro/test_expressions.py``; ``docs/benchmarks.md``), where nested closures
    (one Python call per node) cost more and grow with every node. Default arguments
    instead of closure cells would be a little faster but let a caller pass its own.
    Templates compile to one f-string (``FORMAT_VALUE`` opcodes), the fastest way to format
    in CPython.

Runtime errors
    The generated function wraps its body in ``try`` / ``except Exception`` and raises
    :class:`EvaluationError` naming the expression, its place in the file and the original
    error (as ``__cause__``). Since Python 3.11 a ``try`` block costs nothing when nothing is
    raised, so ``Expr.fn`` itself is the fast path and already raises EvaluationError: the
    engine may call ``expr.fn(scope)`` directly; ``expr(scope)`` is the same call.

Positions
    ``Where`` is the place of the expression's first character in the YAML file (1-based).
    Positions on later lines of a multi-line expression are counted from ``where.col`` too,
    as in a YAML literal block scalar (``|``), where every line has the same indentation: a
    loader should pass, for a block scalar, the first content line and its indentation + 1
    (ruamel reports the ``|`` indicator's position instead).
"""

from __future__ import annotations

import ast
import builtins
import copy
import difflib
import inspect
import keyword
import operator
import re
import weakref
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, NoReturn

import msgspec

from core.yamlsource import SourceError

__all__ = [
    "EvaluationError",
    "Expr",
    "ExpressionError",
    "Inline",
    "LimitError",
    "Where",
    "compile_expr",
    "compile_template",
    "define",
    "inline_form",
]


@dataclass(frozen=True)
class Where:
    """Where an expression sits in a YAML file (1-based), for error messages."""

    file: str
    line: int
    col: int


class ExpressionError(SourceError):
    """An expression refused at compile time; ``str()`` is ``file:line:col: message``."""


class EvaluationError(Exception):
    """An expression failed on one event (``None + 1``, a missing field, a division by zero).

    ``str()`` is ``file:line:col: evaluating '<source>': <ErrorType>: <detail>``; the
    original exception is the ``__cause__``.
    """

    def __init__(self, message: str, *, source: str = "", where: Where | None = None) -> None:
        prefix = f"{where.file}:{where.line}:{where.col}: " if where is not None else ""
        super().__init__(f"{prefix}{message}")
        self.message = message
        self.source = source
        self.where = where


@dataclass(frozen=True)
class Expr:
    """A compiled expression: ``fn(scope)`` gives its value (or raises EvaluationError)."""

    source: str
    fn: Callable[[Any], Any]
    names: frozenset[str]
    paths: frozenset[tuple[str, ...]]
    calls: frozenset[str]

    def __call__(self, scope: Any) -> Any:
        return self.fn(scope)


@dataclass(frozen=True)
class Inline:
    """What a compiled expression's function evaluates, for generated code that evaluates
    it in place, without a call (an aggregate's fold, once per position sample).

    ``body`` is the validated, rewritten tree: it reads the scope as the name ``_s`` and
    every other name from ``cells`` (constants, functions, the guards). Evaluated in
    ``try: ... except <cells[exc]> as e: raise <cells[fail]>(e)``, it raises what the
    function raises. Every name in ``body`` other than ``_s`` is a key of ``cells``.
    """

    body: ast.expr
    cells: dict[str, Any]
    fail: str  # the cell that turns an error into the expression's EvaluationError
    exc: str  # the cell holding ``Exception``

    def same_value(self, other: Inline) -> bool:
        """Whether the two always give the same value on the same scope: one tree over
        the very same constants and functions (only their error messages may differ)."""
        ignored = (self.fail, self.exc)
        if ast.dump(self.body) != ast.dump(other.body):
            return False
        names = {n.id for n in ast.walk(self.body) if isinstance(n, ast.Name)} - {_SCOPE}
        return all(
            n not in ignored and n in other.cells and self.cells[n] is other.cells[n] for n in names
        )


# The inline form of each function ``compile_expr`` made (weakly: they go with their rules).
_INLINE: weakref.WeakKeyDictionary[Callable[[Any], Any], Inline] = weakref.WeakKeyDictionary()


def inline_form(fn: Callable[[Any], Any]) -> Inline | None:
    """The inline form of a function ``compile_expr`` made; None for any other callable."""
    try:
        return _INLINE.get(fn)
    except TypeError:  # not weakly referable: not one of ours
        return None


def define(
    source: str,
    calls: Mapping[str, Callable[[Any], Any]],
    namespace: dict[str, Any],
    filename: str,
) -> None:
    """Run generated Python ``source`` (fixed templates, no text of a pack's) in
    ``namespace``, each statement ``var = name(x)`` where ``calls[name]`` has an inline
    form replaced by the expression's body on ``x``, in the ``try`` that raises what its
    function raises. Calls of other functions stay calls (``namespace`` holds them).

    Python calls were a large part of the engine's hottest loops: an aggregate's fold, the
    rules an event is dispatched to.
    """
    tree = ast.parse(source)
    _Inliner(calls, namespace).statements(tree.body)
    exec(compile(tree, filename, "exec"), namespace)


class _Inliner:
    """Replaces ``var = name(x)`` by the expression's body in its ``try``, its names bound
    in the namespace under a prefix of its own. Only statements are walked (the generated
    code's calls to inline are statements of their own): rule sets load often enough
    (every test, every reload) for a walk of every node to count."""

    def __init__(
        self, calls: Mapping[str, Callable[[Any], Any]], namespace: dict[str, Any]
    ) -> None:
        self.calls, self.namespace = calls, namespace
        self.placed = 0

    def statements(self, body: list[ast.stmt]) -> None:
        for i, node in enumerate(body):
            if isinstance(node, ast.Assign):
                body[i] = self.assign(node)
            for name in ("body", "orelse", "finalbody"):
                inner = getattr(node, name, None)
                if isinstance(inner, list):
                    self.statements(inner)
            for handler in getattr(node, "handlers", ()):
                self.statements(handler.body)

    def assign(self, node: ast.Assign) -> ast.stmt:
        call = node.value
        if not (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Name)
            and call.func.id in self.calls
            and len(call.args) == 1
            and not call.keywords
            and isinstance(call.args[0], ast.Name)
        ):
            return node
        form = inline_form(self.calls[call.func.id])
        if form is None:
            return node
        self.placed += 1
        prefix = f"_x{self.placed}"
        for cell, v in form.cells.items():
            self.namespace[prefix + cell] = v
        body = _renamed(form.body, call.args[0].id, prefix)
        fail = ast.Name(prefix + form.fail, ast.Load())
        raised = ast.Raise(ast.Call(fail, [ast.Name("_e", ast.Load())], []), None)
        handler = ast.ExceptHandler(ast.Name(prefix + form.exc, ast.Load()), "_e", [raised])
        assign = ast.Assign(node.targets, body)
        tried = ast.copy_location(ast.Try([assign], [handler], [], []), node)
        for new in (assign, handler, handler.type, raised, raised.exc, fail, *raised.exc.args):  # type: ignore[union-attr]
            ast.copy_location(new, node)
        return tried


def _renamed(node: Any, scope: str, prefix: str) -> Any:
    """A copy of an expression's tree, the scope named ``scope`` and every other name
    given ``prefix`` (a copy: the same body is placed in several functions)."""
    if isinstance(node, ast.Name):
        new = scope if node.id == _SCOPE else prefix + node.id
        return ast.copy_location(ast.Name(new, node.ctx), node)
    if isinstance(node, ast.AST):
        fields = {f: _renamed(getattr(node, f), scope, prefix) for f in node._fields}
        copied = type(node)(**fields)
        return ast.copy_location(copied, node)
    if isinstance(node, list):
        return [_renamed(n, scope, prefix) for n in node]
    return node


def compile_expr(
    source: str,
    where: Where,
    *,
    names: Collection[str],
    functions: Mapping[str, Callable[..., Any]],
    constants: Mapping[str, Any] = {},
    macros: Mapping[str, ast.expr] = {},
    itself: str | None = None,
) -> Expr:
    """Compile one expression, or raise ExpressionError pointing at what is not allowed.

    ``itself`` names the scope object itself rather than one of its attributes: an
    aggregate's ``each`` item (``s.x``) is then evaluated on the item, with no scope built.

    ``macros`` are named conditions, parsed once: a macro's name in the expression is
    replaced by its syntax tree (as Falco inlines its macros), placed where the name was.
    """
    c = _Compiler(source, where, names, functions, constants, macros)
    c.itself = itself
    body = c.expression(_Fragment(source, 0, 0))
    return c.finish(body)


def compile_template(
    source: str,
    where: Where,
    *,
    names: Collection[str],
    functions: Mapping[str, Callable[..., Any]],
    constants: Mapping[str, Any] = {},
    macros: Mapping[str, ast.expr] = {},
) -> Expr:
    """Compile a text template: ``{expr}`` or ``{expr:spec}`` or ``{expr!r}`` placeholders,
    ``{{`` and ``}}`` for literal braces; ``fn(scope)`` returns the formatted string."""
    c = _Compiler(source, where, names, functions, constants, macros)
    values: list[ast.expr] = []
    literal: list[str] = []

    def flush() -> None:
        if literal:
            values.append(ast.Constant("".join(literal)))
            literal.clear()

    for part in _scan_template(c, source):
        if isinstance(part, str):
            literal.append(part)
            continue
        flush()
        start, text, conversion, spec = part
        line0, col0 = _line_col(source, start)
        problem = _spec_problem(spec)
        if problem is not None:
            spec_at = source.index(spec, start + len(text))
            line, col = _line_col(source, spec_at)
            c.fail((where.line + line, where.col + col), problem)
        value = c.expression(_Fragment(text, line0, col0))
        values.append(
            ast.FormattedValue(
                value=value,
                conversion=ord(conversion) if conversion else -1,
                format_spec=ast.JoinedStr([ast.Constant(spec)]) if spec else None,
            )
        )
    flush()
    return c.finish(ast.JoinedStr(values))


# -- messages -------------------------------------------------------------------------------

_OPERATORS = "use 'and', 'or', 'not' for logic and + - * / // % ** for arithmetic"
_ONE_EXPRESSION = "a condition or value is one expression over names, literals and functions"
_INTERNALS = frozenset(
    {
        "f_back", "f_builtins", "f_code", "f_globals", "f_locals", "f_trace",
        "gi_code", "gi_frame", "gi_yieldfrom", "cr_await", "cr_code", "cr_frame",
        "ag_await", "ag_code", "ag_frame", "tb_frame", "tb_next", "co_code",
        "func_code", "func_globals", "mro",
    }
)  # fmt: skip
_BINOPS: dict[type[ast.operator], str] = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
    ast.Mod: "%", ast.Pow: "**",
}  # fmt: skip
_REFUSED_BINOPS: dict[type[ast.operator], str] = {
    ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^", ast.LShift: "<<", ast.RShift: ">>",
    ast.MatMult: "@",
}  # fmt: skip
_STATEMENTS: dict[type[ast.stmt], str] = {
    ast.FunctionDef: "def", ast.AsyncFunctionDef: "async def", ast.ClassDef: "class",
    ast.Return: "return", ast.Delete: "del", ast.For: "for", ast.AsyncFor: "async for",
    ast.While: "while", ast.If: "if", ast.With: "with", ast.AsyncWith: "async with",
    ast.Raise: "raise", ast.Try: "try", ast.Assert: "assert", ast.Global: "global",
    ast.Nonlocal: "nonlocal", ast.Pass: "pass", ast.Break: "break", ast.Continue: "continue",
    ast.Match: "match",
}  # fmt: skip
_MAX_POW_BITS = 100_000  # the largest integer an operator may make, in bits
_MAX_ITEMS = 100_000  # the longest string, list or tuple ``*`` may make
_MAX_SPLICED = 5000  # syntax nodes that macros may add to one expression
_MAX_SPEC_NUMBER = 1000  # the widest width or precision of a format spec or of '%'


def _methods() -> frozenset[str]:
    """The public methods of every kind of value an expression can hold: no expression may
    name one, so no bound method (``staff.add``, ``"{}".format``) becomes a value."""
    kinds: tuple[type, ...] = (
        str, int, float, bool, list, tuple, set, frozenset, dict, type(None), object,
        datetime, date, time, timedelta, timezone, msgspec.Struct,
    )  # fmt: skip
    return frozenset(
        n
        for kind in kinds
        for n in dir(kind)
        if not n.startswith("_") and callable(getattr(kind, n, None))
    )


_METHODS = _methods()
# Vetted keyword arguments of the builtins a pack may call (none calls what it is given:
# ``min(xs, key=staff.add)`` would call a method). Python functions: their parameters.
_BUILTIN_KEYWORDS: dict[Any, frozenset[str]] = {
    min: frozenset({"default"}),
    max: frozenset({"default"}),
    int: frozenset({"base"}),
    len: frozenset(),
    abs: frozenset(),
    str: frozenset(),
    float: frozenset(),
    round: frozenset({"ndigits"}),
}


def _suggest(word: str, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _listing(kind: str, choices: Collection[str]) -> str:
    if not choices:
        return f"no {kind} are allowed here"
    return f"the {kind} allowed here are: {', '.join(sorted(choices))}"


# -- positions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fragment:
    """Text to parse as one expression, starting at (line0, col0) of the source (0-based)."""

    text: str
    line0: int
    col0: int


def _line_col(text: str, index: int) -> tuple[int, int]:
    """0-based line and column of a character index."""
    line = text.count("\n", 0, index)
    return line, index - (text.rfind("\n", 0, index) + 1)


class _Parsed:
    """A parse of a fragment (``prefix`` is the "(" added to parse multi-line expressions)."""

    def __init__(self, compiler: _Compiler, frag: _Fragment, prefix: str) -> None:
        self.compiler = compiler
        self.frag = frag
        self.prefix = prefix
        self.lines = (prefix + frag.text).split("\n")

    def at(self, lineno: int, char_col: int) -> tuple[int, int]:
        """File position of a 1-based line and 0-based character column of the parsed text."""
        if lineno > len(self.lines):  # the ")" added after the text: point at the end
            lineno, char_col = len(self.lines), len(self.lines[-1])
        lineno = max(1, lineno)
        line_text = self.lines[lineno - 1]
        if lineno == len(self.lines):
            char_col = min(char_col, len(line_text))
        if lineno == 1:
            char_col = max(0, char_col - len(self.prefix))
        dline = lineno - 1
        sline = self.frag.line0 + dline
        scol = self.frag.col0 + char_col if dline == 0 else char_col
        w = self.compiler.where
        return w.line + sline, w.col + scol

    def char_col(self, lineno: int, byte_col: int) -> int:
        raw = self.lines[lineno - 1].encode()
        return len(raw[:byte_col].decode(errors="ignore"))

    def node(self, node: ast.AST) -> tuple[int, int]:
        lineno = node.lineno  # type: ignore[attr-defined]
        return self.at(lineno, self.char_col(lineno, node.col_offset))  # type: ignore[attr-defined]

    def end(self, node: ast.AST, back: int = 0) -> tuple[int, int]:
        """The position ``back`` characters before the end of ``node``."""
        lineno = node.end_lineno  # type: ignore[attr-defined]
        col = self.char_col(lineno, node.end_col_offset)  # type: ignore[attr-defined]
        return self.at(lineno, col - back)

    def between(self, left: ast.AST, right: ast.AST) -> tuple[int, int]:
        """The first character that is not a space or a parenthesis between two nodes."""
        line = left.end_lineno  # type: ignore[attr-defined]
        col = self.char_col(line, left.end_col_offset)  # type: ignore[attr-defined]
        while line <= len(self.lines):
            text = self.lines[line - 1]
            while col < len(text) and text[col] in " \t()":
                col += 1
            if col < len(text):
                return self.at(line, col)
            line, col = line + 1, 0
        return self.node(right)


# -- the compiler ---------------------------------------------------------------------------


class _TooLarge(Exception):
    """Macros spliced into one expression beyond ``_MAX_SPLICED`` nodes (the macro's name)."""


class LimitError(OverflowError):
    """A value beyond the sandbox's limits: too long a string, too large an integer."""


def _safe_pow(base: Any, exp: Any) -> Any:
    if (
        isinstance(base, int)
        and isinstance(exp, int)
        and exp > 0
        and abs(base) > 1
        and exp * abs(base).bit_length() > _MAX_POW_BITS
    ):
        raise LimitError(f"integer power too large ({base} ** {exp}; at most {_MAX_POW_BITS} bits)")
    return base**exp


def _size(value: Any, most: int) -> int:
    """What a repetition of ``value`` repeats: its items, a string item counting its
    characters and a list or tuple item its own size (``[[x] * 1000] * 1000`` is a million,
    not a thousand: printed, compared or hashed, each inner item is visited). Counting stops
    past ``most``, so no more than that much is walked."""
    if isinstance(value, str):
        return len(value)
    total, stack = 0, [value]
    while stack and total <= most:
        items = stack.pop()
        for item in items:
            if isinstance(item, str):
                total += max(1, len(item))
            elif isinstance(item, list | tuple | set | frozenset) and item:
                stack.append(item)
            else:
                total += 1
            if total > most:
                break
    return total


def _safe_mul(a: Any, b: Any) -> Any:
    """``a * b``, refused before it makes a string, list or integer too large to be worth it."""
    if type(a) is float or type(b) is float:
        return a * b
    if isinstance(a, str | list | tuple) and isinstance(b, int):
        a, b = b, a
    if isinstance(b, str | list | tuple) and isinstance(a, int):
        if a > 0 and len(b) * a > _MAX_ITEMS:
            raise LimitError(f"repetition too large ({len(b)} * {a}; at most {_MAX_ITEMS} items)")
        if a > 0 and not isinstance(b, str) and _size(b, _MAX_ITEMS // a) * a > _MAX_ITEMS:
            raise LimitError(
                f"repetition too large ({a} copies of {_size(b, _MAX_ITEMS // a)}+ items and "
                f"characters; at most {_MAX_ITEMS})"
            )
    elif (
        isinstance(a, int)
        and isinstance(b, int)
        and a.bit_length() + b.bit_length() > _MAX_POW_BITS
    ):
        raise LimitError(f"integer product too large (more than {_MAX_POW_BITS} bits)")
    return a * b


_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0 +\-]*(\*|\d*)(?:\.(\*|\d*))?[hlL]?(.)", re.S)


def _printf_problem(text: str) -> str | None:
    """What is wrong with a '%'-format string (a width taken from the values, or too wide)."""
    for m in _PRINTF.finditer(text):
        for part in m.group(1, 2):
            if part == "*":
                return "'*' widths are not allowed in '%' formatting; write the width out"
            if part and int(part) > _MAX_SPEC_NUMBER:
                return f"a width or precision of {part} is too large (at most {_MAX_SPEC_NUMBER})"
    return None


def _safe_mod(a: Any, b: Any) -> Any:
    """``a % b``: a remainder, or '%'-formatting with bounded widths."""
    if isinstance(a, str):
        problem = _printf_problem(a)
        if problem is not None:
            raise LimitError(problem)
    return a % b


def _spec_problem(spec: str) -> str | None:
    """What is wrong with a template's format spec: a width or precision that is too large."""
    for number in re.findall(r"\d+", spec):
        if int(number) > _MAX_SPEC_NUMBER:
            return (
                f"a width or precision of {number} in a format spec is too large "
                f"(at most {_MAX_SPEC_NUMBER})"
            )
    return None


def _safe_round(number: Any, ndigits: Any = None) -> Any:
    """``round``, with a bounded number of digits (``round(n, -10**9)`` would take minutes)."""
    if ndigits is None:
        return round(number)
    if isinstance(ndigits, int) and abs(ndigits) > _MAX_SPEC_NUMBER:
        raise LimitError(f"round to {ndigits} digits: at most {_MAX_SPEC_NUMBER}")
    return round(number, ndigits)


_FOLD: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: _safe_mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: _safe_mod, ast.Pow: _safe_pow,
}  # fmt: skip


def _check_display_repetition(
    v: _Validator, node: ast.BinOp, left: ast.expr, right: ast.expr
) -> None:
    """``[0] * 10 ** 9``: a list or tuple display times a constant, refused at check time."""
    for seq, n in ((left, right), (right, left)):
        if (
            isinstance(seq, ast.List | ast.Tuple)
            and isinstance(n, ast.Constant)
            and type(n.value) is int
            and len(seq.elts) * n.value > _MAX_ITEMS
        ):
            v.fail(
                v.p.between(node.left, node.right),
                f"repetition too large ({len(seq.elts)} * {n.value}; at most {_MAX_ITEMS} items)",
            )


def _float_constant(c: _Compiler, left: ast.expr, right: ast.expr) -> bool:
    """Whether one operand is a float literal or parameter: ``x * 0.5`` repeats nothing and
    stays small, so it needs no guard."""
    for n in (left, right):
        if isinstance(n, ast.Constant) and type(n.value) is float:
            return True
        if isinstance(n, ast.Name) and type(c.cell_values.get(n.id)) is float:
            return True
    return False


def _keywords(fn: Callable[..., Any]) -> frozenset[str]:
    """The keyword arguments a call of ``fn`` may pass."""
    try:
        known = _BUILTIN_KEYWORDS.get(fn)
    except TypeError:  # unhashable
        known = None
    if known is not None:
        return known
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return frozenset()
    return frozenset(
        p.name
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and not p.name.startswith("_")
    )


def _hashable_collection(value: Any) -> bool:
    # Exact types only: a set subclass (a live set the engine keeps) must stay live.
    if type(value) not in (list, tuple, set, frozenset):
        return False
    try:
        frozenset(value)
    except TypeError:
        return False
    return True


_SCOPE = "_s"


class _Compiler:
    def __init__(
        self,
        source: str,
        where: Where,
        names: Collection[str],
        functions: Mapping[str, Callable[..., Any]],
        constants: Mapping[str, Any],
        macros: Mapping[str, ast.expr] = {},
    ) -> None:
        self.macros = dict(macros)
        self.itself: str | None = None
        for kind, group in (("name", names), ("function", functions), ("constant", constants)):
            for n in group:
                if not n.isidentifier() or n.startswith("_") or keyword.iskeyword(n):
                    raise ValueError(f"{kind} {n!r} cannot be used in expressions")
        self.source = source
        self.where = where
        self.constants = dict(constants)
        self.scope_names = frozenset(names) - self.constants.keys()
        self.functions = dict(functions)
        self.values = self.scope_names | self.constants.keys()
        self.read: set[str] = set()
        self.paths: set[tuple[str, ...]] = set()
        self.calls: set[str] = set()
        self.cells: dict[tuple[str, str], str] = {}  # (kind, name) -> closure variable
        self.cell_values: dict[str, Any] = {}

    # errors

    def fail(self, pos: tuple[int, int], message: str) -> NoReturn:
        raise ExpressionError(self.where.file, pos[0], pos[1], message)

    # closure cells

    def cell(self, kind: str, name: str, value: Any) -> ast.Name:
        var = self.cells.get((kind, name))
        if var is None:
            var = f"_{kind}{len(self.cells)}"
            self.cells[(kind, name)] = var
            self.cell_values[var] = value
        return ast.Name(var, ast.Load())

    # parsing

    def expression(self, frag: _Fragment) -> ast.expr:
        tree, parsed = self.parse(frag)
        try:
            body = self.splice(tree.body) if self.macros else tree.body
            return _Validator(self, parsed).visit(body)
        except _TooLarge as exc:
            self.fail(
                parsed.at(1, len(parsed.prefix)),
                f"macro {exc.args[0]!r} expands to more than {_MAX_SPLICED} parts here "
                "(macros that use macros are copied in full at every use): "
                "write a smaller condition",
            )
        except RecursionError:
            self.fail(parsed.at(1, len(parsed.prefix)), "the expression is nested too deeply")

    def splice(self, node: ast.expr) -> ast.expr:
        """Replace macro names by the macros' trees, at the place of the name."""
        compiler = self

        left = [_MAX_SPLICED]

        class Splicer(ast.NodeTransformer):
            def visit_Name(self, name: ast.Name) -> ast.AST:
                macro = compiler.macros.get(name.id)
                if macro is None or name.id in compiler.values:
                    return name
                compiler.read.add(name.id)
                # Macros that use each other double at every level: count what is spliced.
                left[0] -= sum(1 for _ in ast.walk(macro))
                if left[0] < 0:
                    raise _TooLarge(name.id)
                try:
                    tree = self.visit(copy.deepcopy(macro))  # macros may use earlier macros
                except _TooLarge:
                    raise _TooLarge(name.id) from None  # name the macro used here
                for n in ast.walk(tree):
                    ast.copy_location(n, name)
                return tree

        return Splicer().visit(node)

    def parse(self, frag: _Fragment) -> tuple[ast.Expression, _Parsed]:
        text = frag.text
        errors: list[tuple[SyntaxError, _Parsed]] = []
        # As written first; then in parentheses, so that a multi-line expression (a YAML
        # block scalar) or one with leading spaces parses as Python would inside ( ).
        for prefix in ("", "("):
            parsed = _Parsed(self, frag, prefix)
            try:
                tree = ast.parse(prefix + text + ("\n)" if prefix else ""), mode="eval")
            except SyntaxError as exc:
                errors.append((exc, parsed))
                continue
            except ValueError as exc:  # null bytes
                self.fail(parsed.at(1, 0), f"syntax error: {exc}")
            except (RecursionError, MemoryError):
                self.fail(parsed.at(1, 0), "the expression is nested too deeply")
            return tree, parsed
        self.statements(frag)
        exc, parsed = errors[1] if "\n" in text or text[:1].isspace() else errors[0]
        message = (exc.msg or "invalid syntax").replace("Maybe you meant", "did you mean")
        if exc.lineno is None:
            self.fail(parsed.at(1, len(parsed.prefix)), f"syntax error: {message}")
        self.fail(parsed.at(exc.lineno, (exc.offset or 1) - 1), f"syntax error: {message}")

    def statements(self, frag: _Fragment) -> None:
        """Explain sources that are Python statements rather than one expression."""
        try:
            module = ast.parse(frag.text, mode="exec")
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return
        parsed = _Parsed(self, frag, "")
        for i, stmt in enumerate(module.body):
            pos = parsed.node(stmt)
            if isinstance(stmt, ast.Import | ast.ImportFrom):
                self.fail(
                    pos,
                    "imports are not allowed; an expression can use only the names and "
                    "functions the rule pack provides",
                )
            if isinstance(stmt, ast.Assign | ast.AugAssign | ast.AnnAssign):
                self.fail(pos, "assignments are not allowed; use '==' to compare values")
            if not isinstance(stmt, ast.Expr):
                kw = _STATEMENTS.get(type(stmt), type(stmt).__name__)
                self.fail(pos, f"'{kw}' statements are not allowed; {_ONE_EXPRESSION}")
            if i > 0:
                self.fail(
                    pos,
                    "only one expression is allowed; combine conditions with 'and' / 'or'",
                )

    # code generation

    def finish(self, body: ast.expr) -> Expr:
        fail = self.cell("fail", "", self._failure())
        error = self.cell("exc", "", Exception)  # there are no builtins in the namespace
        params = list(self.cell_values)
        module = ast.parse(
            f"def _make({', '.join(params)}):\n"
            f"    def _expr({_SCOPE}):\n"
            "        try:\n"
            "            return None\n"
            f"        except {error.id} as _e:\n"
            f"            raise {fail.id}(_e)\n"
            "    return _expr\n"
        )
        make = module.body[0]
        assert isinstance(make, ast.FunctionDef)
        inner = make.body[0]
        assert isinstance(inner, ast.FunctionDef)
        handler = inner.body[0]
        assert isinstance(handler, ast.Try)
        ret = handler.body[0]
        assert isinstance(ret, ast.Return)
        ret.value = body
        ast.fix_missing_locations(module)
        w = self.where
        try:
            code = compile(module, f"<expression {w.file}:{w.line}:{w.col}>", "exec")
        except (RecursionError, MemoryError):
            self.fail((w.line, w.col), "the expression is nested too deeply")
        # The generated code loads no global name (every name was rewritten above), so it
        # can reach no builtin; __import__ is there for C code run from this frame, such as
        # datetime's strftime (``{at:%H:%M}``), which imports through the frame's builtins.
        namespace: dict[str, Any] = {"__builtins__": {"__import__": builtins.__import__}}
        exec(code, namespace)
        fn = namespace["_make"](*(self.cell_values[p] for p in params))
        _INLINE[fn] = Inline(body, dict(self.cell_values), fail.id, error.id)
        return Expr(
            source=self.source,
            fn=fn,
            names=frozenset(self.read),
            paths=frozenset(self.paths),
            calls=frozenset(self.calls),
        )

    def _failure(self) -> Callable[[BaseException], BaseException]:
        source, where = self.source, self.where

        def failure(exc: BaseException) -> BaseException:
            if isinstance(exc, EvaluationError):
                return exc
            err = EvaluationError(
                f"evaluating {source!r}: {type(exc).__name__}: {exc}", source=source, where=where
            )
            err.__cause__ = exc
            return err

        return failure


class _Validator:
    """Checks every node against the allowed subset and rewrites it for code generation."""

    def __init__(self, compiler: _Compiler, parsed: _Parsed) -> None:
        self.c = compiler
        self.p = parsed

    def fail(self, node_or_pos: ast.AST | tuple[int, int], message: str) -> NoReturn:
        pos = node_or_pos if isinstance(node_or_pos, tuple) else self.p.node(node_or_pos)
        self.c.fail(pos, message)

    def visit(self, node: ast.expr) -> ast.expr:
        method = getattr(self, f"v_{type(node).__name__}", None)
        if method is None:
            self.refuse(node)
        out = method(node)
        return ast.copy_location(out, node)

    def refuse(self, node: ast.expr) -> NoReturn:
        if isinstance(node, ast.Lambda):
            self.fail(node, f"lambda is not allowed; {_ONE_EXPRESSION}")
        if isinstance(node, ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp):
            kind = {
                ast.ListComp: "list comprehensions",
                ast.SetComp: "set comprehensions",
                ast.DictComp: "dict comprehensions",
                ast.GeneratorExp: "generator expressions",
            }[type(node)]
            self.fail(
                node,
                f"{kind} are not allowed; work on collections with the functions the rule "
                "pack provides",
            )
        if isinstance(node, ast.NamedExpr):
            self.fail(node, "':=' is not allowed; an expression cannot assign, use '==' to compare")
        if isinstance(node, ast.JoinedStr):
            self.fail(
                node,
                "f-strings are not allowed in expressions; use a template field instead, "
                'such as "Waited {wait_s:.0f} s"',
            )
        if isinstance(node, ast.Starred):
            self.fail(node, "'*' unpacking is not allowed; pass arguments one by one")
        if isinstance(node, ast.Await):
            self.fail(node, f"'await' is not allowed; {_ONE_EXPRESSION}")
        if isinstance(node, ast.Yield | ast.YieldFrom):
            self.fail(node, f"'yield' is not allowed; {_ONE_EXPRESSION}")
        if isinstance(node, ast.Dict):
            self.fail(node, "dict literals are not allowed; use list, tuple or set literals")
        self.fail(node, f"{type(node).__name__} is not allowed; {_ONE_EXPRESSION}")

    # leaves

    def v_Constant(self, node: ast.Constant) -> ast.expr:
        value = node.value
        if isinstance(value, bytes):
            self.fail(node, 'bytes literals are not allowed; use str literals such as "abc"')
        if isinstance(value, complex):
            self.fail(node, "complex numbers are not allowed; use int or float literals")
        if value is Ellipsis:
            self.fail(node, "'...' is not allowed; use None for a missing value")
        return ast.Constant(value)

    def name(self, node: ast.Name) -> tuple[ast.expr, bool]:
        """The rewritten name, and whether it reads the scope."""
        name = node.id
        c = self.c
        if name.startswith("_"):
            allowed = _listing("names", c.values)
            self.fail(node, f"{name!r}: names starting with '_' are not allowed; {allowed}")
        if name in c.constants:
            c.read.add(name)
            return c.cell("k", name, c.constants[name]), False
        if name in c.scope_names:
            c.read.add(name)
            if name == c.itself:  # the scope object itself goes by this name
                return ast.Name(_SCOPE, ast.Load()), True
            return ast.Attribute(ast.Name(_SCOPE, ast.Load()), name, ast.Load()), True
        if name in c.functions:
            self.fail(node, f"{name!r} is a function; call it, as in {name}(...)")
        self.fail(
            node,
            f"unknown name {name!r}{_suggest(name, c.values)}; " + _listing("names", c.values),
        )

    def v_Name(self, node: ast.Name) -> ast.expr:
        out, scope = self.name(node)
        if scope:
            self.c.paths.add((node.id,))
        return out

    def v_Attribute(self, node: ast.Attribute) -> ast.expr:
        chain: list[ast.Attribute] = []
        root: ast.expr = node
        while isinstance(root, ast.Attribute):
            chain.append(root)
            root = root.value
        chain.reverse()  # innermost (leftmost in the text) first
        if isinstance(root, ast.Name):
            out, scope = self.name(root)
            out = ast.copy_location(out, root)
        else:
            out, scope = self.visit(root), False
        for a in chain:
            self.attribute_name(a)
        if not self.scoped(root):
            a = chain[0]
            self.fail(
                self.p.end(a, len(a.attr)),
                f"{a.attr!r}: only the fields of events and of the names a rule sees have "
                "attributes (data.sku, rule.id); lists, params, sets, literals and the "
                "values of functions have none",
            )
        if scope:
            assert isinstance(root, ast.Name)
            self.c.paths.add((root.id, *(a.attr for a in chain)))
        for a in chain:
            out = ast.copy_location(ast.Attribute(out, a.attr, ast.Load()), a)
        return out

    def scoped(self, node: ast.expr) -> bool:
        """Whether a value is read from the scope: a scope name, its fields, their items."""
        while isinstance(node, ast.Attribute | ast.Subscript):
            node = node.value
        return isinstance(node, ast.Name) and node.id in self.c.scope_names

    def attribute_name(self, a: ast.Attribute) -> None:
        pos = self.p.end(a, len(a.attr))
        if a.attr in _METHODS:
            self.fail(
                pos,
                f"{a.attr!r} is a method, and methods cannot be used, called or passed; "
                "use event fields such as data.sku and the functions the rule pack provides",
            )
        if a.attr.startswith("_"):
            self.fail(
                pos,
                f"{a.attr!r}: attributes starting with '_' are not allowed; "
                "use event fields such as data.sku",
            )
        if a.attr in _INTERNALS:
            self.fail(
                pos,
                f"{a.attr!r}: interpreter internals are not allowed; "
                "use event fields such as data.sku",
            )

    # compound

    def v_Subscript(self, node: ast.Subscript) -> ast.expr:
        value = self.visit(node.value)
        return ast.Subscript(value, self.visit(node.slice), ast.Load())

    def v_Slice(self, node: ast.Slice) -> ast.expr:
        def part(x: ast.expr | None) -> ast.expr | None:
            return None if x is None else self.visit(x)

        return ast.Slice(part(node.lower), part(node.upper), part(node.step))

    def elements(self, elts: list[ast.expr]) -> list[ast.expr]:
        return [self.visit(e) for e in elts]

    def v_List(self, node: ast.List) -> ast.expr:
        return ast.List(self.elements(node.elts), ast.Load())

    def v_Tuple(self, node: ast.Tuple) -> ast.expr:
        return ast.Tuple(self.elements(node.elts), ast.Load())

    def v_Set(self, node: ast.Set) -> ast.expr:
        return ast.Set(self.elements(node.elts))

    def v_BoolOp(self, node: ast.BoolOp) -> ast.expr:
        return ast.BoolOp(node.op, self.elements(node.values))

    def v_UnaryOp(self, node: ast.UnaryOp) -> ast.expr:
        if isinstance(node.op, ast.Invert):
            self.fail(node, f"the operator '~' is not allowed; {_OPERATORS}")
        operand = self.visit(node.operand)
        number = isinstance(operand, ast.Constant) and type(operand.value) in (int, float)
        if isinstance(node.op, ast.USub | ast.UAdd) and number:  # so that 10 ** -1 folds too
            assert isinstance(operand, ast.Constant)
            value = operand.value
            return ast.Constant(-value if isinstance(node.op, ast.USub) else value)
        return ast.UnaryOp(node.op, operand)

    def v_BinOp(self, node: ast.BinOp) -> ast.expr:
        op = type(node.op)
        if op not in _BINOPS:
            symbol = _REFUSED_BINOPS.get(op, op.__name__)
            self.fail(
                self.p.between(node.left, node.right),
                f"the operator '{symbol}' is not allowed; {_OPERATORS}",
            )
        left, right = self.visit(node.left), self.visit(node.right)
        if isinstance(left, ast.Constant) and isinstance(right, ast.Constant):
            # Both operands known (literals, or folded here): a result beyond the limits is
            # refused now; a small one becomes a constant, as Python's own folding does.
            try:
                value = _FOLD[op](left.value, right.value)
            except LimitError as exc:
                self.fail(self.p.between(node.left, node.right), str(exc))
            except Exception:  # 1 / 0, "a" + 1: an error for run time, as before
                return ast.BinOp(left, node.op, right)
            return ast.Constant(value)
        if op is ast.Mult and not _float_constant(self.c, left, right):
            _check_display_repetition(self, node, left, right)
            return ast.Call(self.c.cell("mul", "", _safe_mul), [left, right], [])
        if op is ast.Mod:
            if isinstance(left, ast.Constant) and isinstance(left.value, str):
                problem = _printf_problem(left.value)
                if problem is not None:
                    self.fail(left, problem)
            elif not isinstance(left, ast.Constant):
                return ast.Call(self.c.cell("mod", "", _safe_mod), [left, right], [])
        if op is ast.Pow:
            # Anything else goes through the guard against gigantic integer powers.
            return ast.Call(self.c.cell("pow", "", _safe_pow), [left, right], [])
        return ast.BinOp(left, node.op, right)

    def v_IfExp(self, node: ast.IfExp) -> ast.expr:
        test = self.visit(node.test)
        return ast.IfExp(test, self.visit(node.body), self.visit(node.orelse))

    def v_Compare(self, node: ast.Compare) -> ast.expr:
        left = self.visit(node.left)
        comparators: list[ast.expr] = []
        for op, right in zip(node.ops, node.comparators, strict=True):
            is_none = isinstance(right, ast.Constant) and right.value is None
            if isinstance(op, ast.Is | ast.IsNot) and not is_none:
                self.fail(
                    right,
                    "'is' compares only with None (x is None, x is not None); "
                    "use '==' to compare values",
                )
            if isinstance(op, ast.In | ast.NotIn):
                comparators.append(ast.copy_location(self.container(right), right))
            else:
                comparators.append(self.visit(right))
        return ast.Compare(left, node.ops, comparators)

    def container(self, node: ast.expr) -> ast.expr:
        """The right operand of ``in``: constant collections become frozensets."""
        c = self.c
        if isinstance(node, ast.Name) and node.id in c.constants:
            value = c.constants[node.id]
            if _hashable_collection(value):
                c.read.add(node.id)
                return c.cell("set", node.id, frozenset(value))
        if (
            isinstance(node, ast.List | ast.Tuple)
            and node.elts
            and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str | int | float | None)
                for e in node.elts
            )
        ):
            # A set display of constants: Python stores it as one frozenset constant.
            return ast.Set(self.elements(node.elts))
        return self.visit(node)

    def v_Call(self, node: ast.Call) -> ast.expr:
        c = self.c
        func = node.func
        if isinstance(func, ast.Attribute):
            self.fail(
                self.p.end(func, len(func.attr)),
                f"{func.attr!r}: methods cannot be called; call the functions the rule pack "
                f"provides by plain name, as in f(x) ({_listing('functions', c.functions)})",
            )
        if not isinstance(func, ast.Name):
            self.fail(
                func,
                "only the functions the rule pack provides can be called, by plain name, "
                "as in f(x)",
            )
        name = func.id
        if name not in c.functions:
            self.fail(
                func,
                f"unknown function {name!r}{_suggest(name, c.functions)}; "
                + _listing("functions", c.functions),
            )
        c.calls.add(name)
        fn = c.functions[name]
        if fn is round:
            fn = _safe_round
        allowed = _keywords(fn)
        for k in node.keywords:
            if k.arg is not None and k.arg not in allowed:
                kinds = ", ".join(sorted(allowed)) if allowed else "none"
                self.fail(
                    k,
                    f"{name}() takes no keyword argument {k.arg!r} (its keywords: {kinds}); "
                    "no function is given another function to call",
                )
        args = []
        for a in node.args:
            if isinstance(a, ast.Starred):
                self.fail(a, "'*' unpacking is not allowed; pass arguments one by one")
            args.append(self.visit(a))
        keywords = []
        for k in node.keywords:
            if k.arg is None:
                self.fail(k, "'**' unpacking is not allowed; pass keyword arguments by name")
            keywords.append(ast.keyword(k.arg, self.visit(k.value)))
        return ast.Call(ast.copy_location(c.cell("f", name, fn), func), args, keywords)


# -- templates ------------------------------------------------------------------------------

_TemplateField = tuple[
    int, str, str, str
]  # (start index of the expression, text, conversion, spec)


def _scan_template(c: _Compiler, source: str) -> list[str | _TemplateField]:
    """Split a template into literal text and placeholders."""

    def fail(index: int, message: str) -> NoReturn:
        line, col = _line_col(source, index)
        w = c.where
        c.fail((w.line + line, w.col + col), message)

    parts: list[str | _TemplateField] = []
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch == "}":
            if source.startswith("}}", i):
                parts.append("}")
                i += 2
                continue
            fail(i, "a single '}' is not allowed in a template; write '}}' for a literal brace")
        if ch != "{":
            j = min((k for k in (source.find("{", i), source.find("}", i)) if k >= 0), default=n)
            parts.append(source[i:j])
            i = j
            continue
        if source.startswith("{{", i):
            parts.append("{")
            i += 2
            continue
        opening = i
        start = j = i + 1
        depth, quote = 0, ""
        end = conv_at = spec_at = -1
        while j < n:
            ch = source[j]
            if quote:
                if ch == "\\":
                    j += 1
                elif ch == quote:
                    quote = ""
            elif ch in "'\"":
                quote = ch
            elif ch in "([{":
                depth += 1
            elif ch in ")]}" and depth > 0:
                depth -= 1
            elif ch == "}":
                end = j
                break
            elif depth > 0:
                pass
            elif ch == "!" and not source.startswith("!=", j):
                conv_at = j
                break
            elif ch == ":":
                spec_at = j
                break
            j += 1
        if end < 0 and conv_at < 0 and spec_at < 0:
            fail(opening, "'{' was never closed; write '{{' for a literal brace")
        expr_end = next(k for k in (end, conv_at, spec_at) if k >= 0)
        text = source[start:expr_end]
        if not text.strip():
            fail(
                opening, "empty placeholder; put an expression between the braces, as in {data.sku}"
            )
        conversion = spec = ""
        if conv_at >= 0:
            conversion = source[conv_at + 1 : conv_at + 2]
            after = conv_at + 2
            if conversion not in ("r", "s", "a") or source[after : after + 1] not in (":", "}"):
                fail(conv_at, "a conversion must be !r, !s or !a, right before ':' or '}'")
            if source[after] == ":":
                spec_at = after
            else:
                end = after
        if spec_at >= 0:
            close = source.find("}", spec_at)
            brace = source.find("{", spec_at)
            if close < 0:
                fail(opening, "'{' was never closed; write '{{' for a literal brace")
            if 0 <= brace < close:
                fail(brace, "placeholders inside a format spec are not supported; write it out")
            spec = source[spec_at + 1 : close]
            end = close
        parts.append((start, text, conversion, spec))
        i = end + 1
    return parts
