"""The rule language's expressions: values, what they read, what they refuse, and where.

Refused expressions are checked for the exact ``line:col`` and a phrase of the message: a
rule author fixes a pack from those two things alone. The expressions sit at line 12,
column 7 of ``rules.yaml`` (``WHERE``), so an offending node at offset ``n`` of the first
line is reported at column ``7 + n``.
"""

from __future__ import annotations

import builtins
import dis
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import events as ev
from core.yamlsource import SourceError
from rules.expressions import (
    EvaluationError,
    Expr,
    ExpressionError,
    LimitError,
    Where,
    compile_expr,
    compile_template,
)

WHERE = Where("rules.yaml", 12, 7)
NAMES = ("type", "data", "subject", "store", "at", "s", "wait_s", "rule")
PRICES = {"beer": 250, "wine": 900, "milk": 120}


def price(sku: str) -> int:
    return PRICES[sku]


def zone_of(x: float, y: float, *, default: str = "aisle") -> str:
    return "checkout-queue" if x > 10 else default


FUNCTIONS = {"price": price, "zone_of": zone_of}
CONSTANTS = {"age_restricted": ["beer", "wine"], "limit": 3, "tags": ("a", "b")}
AT = datetime(2026, 1, 1, tzinfo=UTC)


def picked(sku: str = "beer", qty: int = 2) -> ev.ItemPicked:
    return ev.new(
        ev.ItemPicked,
        store="s1",
        at=AT,
        source="cam",
        subject="v-1",
        data=ev.ItemData(sku=sku, shelf="A1", qty=qty),
    )


class Scope:
    """The engine's small scope object for extra names."""

    __slots__ = ("data", "s", "type", "wait_s")

    def __init__(self, **values: Any) -> None:
        for k, v in values.items():
            setattr(self, k, v)


def expr(source: str, **kw: Any) -> Expr:
    kw.setdefault("names", NAMES)
    kw.setdefault("functions", FUNCTIONS)
    kw.setdefault("constants", CONSTANTS)
    return compile_expr(source, WHERE, **kw)


def template(source: str, **kw: Any) -> Expr:
    kw.setdefault("names", NAMES)
    kw.setdefault("functions", FUNCTIONS)
    kw.setdefault("constants", CONSTANTS)
    return compile_template(source, WHERE, **kw)


# -- evaluation ------------------------------------------------------------------------------

EVENT_CASES = [
    ('type == "item.picked" and data.qty >= 2', True),
    ('type == "item.picked" and data.qty >= 3', False),
    ("data.sku in age_restricted", True),
    ("data.sku not in age_restricted", False),
    ('data.sku in ["milk", "bread"]', False),
    ('data.sku in ("beer",)', True),
    ('data.sku in {"beer", "wine"}', True),
    ('"ee" in data.sku', True),  # a str constant keeps substring semantics
    ("data.qty * price(data.sku)", 500),
    ("zone_of(12, 0)", "checkout-queue"),
    ('zone_of(1, 0, default="entrance")', "entrance"),
    ("subject", "v-1"),
    ("store + '/' + subject", "s1/v-1"),
    ("at.year", 2026),
    ("data.sku[0]", "b"),
    ("data.sku[1:3]", "ee"),
    ("data.sku[::-1]", "reeb"),
    ("tags[-1]", "b"),
    ("[1, 2, data.qty]", [1, 2, 2]),
    ("(1, data.sku)", (1, "beer")),
    ("{data.qty, 2}", {2}),
    ("[]", []),
    ("1 < data.qty <= 2 < 3", True),
    ("1 < data.qty < 2", False),
    ("data.qty != 2 or data.sku", "beer"),
    ("not data.qty", False),
    ("-data.qty + +1", -1),
    ("data.qty / 4", 0.5),
    ("7 // data.qty", 3),
    ("7 % data.qty", 1),
    ("data.qty ** 10", 1024),
    ("2 ** 0.5", 2**0.5),
    ("2 ** -1", 0.5),
    ("data.qty - 0.5", 1.5),
    ("'big' if data.qty > limit else 'small'", "small"),
    ("data.sku is None", False),
    ("data.sku is not None", True),
    ("None", None),
    ("True and 3", 3),
    ("'é' + data.sku", "ébeer"),
    ("data.qty >= 2 and\n  data.sku == 'beer'", True),
]


@pytest.mark.parametrize(("source", "value"), EVENT_CASES)
def test_evaluates_against_an_event(source: str, value: Any) -> None:
    e = expr(source)
    assert e(picked()) == value
    assert e.fn(picked()) == value
    assert type(e(picked())) is type(value)


def test_scope_object_gives_extra_names() -> None:
    sample = ev.PositionSample(track="t1", x=12.5, y=3.0)
    scope = Scope(type="position.samples", s=sample, wait_s=93.4, data=None)
    assert expr('zone_of(s.x, s.y) == "checkout-queue"')(scope) is True
    assert expr("wait_s > 60 and data is None")(scope) is True
    assert expr("s.track")(scope) == "t1"


def test_constants_are_bound_at_compile_time_not_read_from_the_scope() -> None:
    scope = Scope(wait_s=1.0)
    e = expr("wait_s", constants={"wait_s": 99})
    assert e(scope) == 99
    assert e.names == {"wait_s"}
    assert e.paths == set()  # constants are not scope paths


def test_constant_collections_test_membership_by_value() -> None:
    skus = ["beer", "wine"]
    e = expr("data.sku in skus", constants={"skus": skus})
    assert e(picked("wine")) is True
    assert e(picked("milk")) is False
    # a list constant used as a value stays the list it is
    assert expr("skus + ['x']", constants={"skus": skus})(picked()) == ["beer", "wine", "x"]
    # an unhashable collection is searched as it is
    nested = expr("[1] in xs", constants={"xs": [[1], [2]]})
    assert nested(picked()) is True


def test_names_paths_and_calls() -> None:
    e = expr('type == "item.picked" and data.sku in age_restricted')
    assert e.names == {"type", "data", "age_restricted"}
    assert e.paths == {("type",), ("data", "sku")}
    assert e.calls == set()
    assert e.source == 'type == "item.picked" and data.sku in age_restricted'

    e = expr("data.qty * price(data.sku) + len_(s.x)", functions={**FUNCTIONS, "len_": len})
    assert e.names == {"data", "s"}
    assert e.paths == {("data", "qty"), ("data", "sku"), ("s", "x")}
    assert e.calls == {"price", "len_"}

    e = expr('rule.id if data.labels["k"] else s.samples[0].x')
    assert e.paths == {("rule", "id"), ("data", "labels"), ("s", "samples")}

    e = expr("zone_of(s.x, s.y, default=subject) == 'q'")
    assert e.calls == {"zone_of"}
    assert e.paths == {("s", "x"), ("s", "y"), ("subject",)}


def test_names_in_both_lists_are_constants() -> None:
    e = expr("limit", names=(*NAMES, "limit"))
    assert e(Scope()) == 3


# -- runtime errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "cause", "phrase"),
    [
        ("data.zone", AttributeError, "no attribute 'zone'"),
        ("rule.id", AttributeError, "rule"),  # a raw event has no rule
        ("None + data.qty", TypeError, "unsupported operand"),
        ("data.qty / (data.qty - 2)", ZeroDivisionError, "division by zero"),
        ("price('caviar')", KeyError, "caviar"),
        ("data.sku[10]", IndexError, "out of range"),
        ("10 ** data.qty ** 30", LimitError, "too large"),
    ],
)
def test_runtime_errors_name_the_expression(source: str, cause: type, phrase: str) -> None:
    e = expr(source)
    with pytest.raises(EvaluationError) as info:
        e.fn(picked())  # the raw function already raises EvaluationError
    err = info.value
    assert isinstance(err.__cause__, cause)
    assert str(err).startswith(f"rules.yaml:12:7: evaluating {source!r}: {cause.__name__}")
    assert phrase in str(err)
    assert err.source == source
    assert err.where == WHERE
    with pytest.raises(EvaluationError):
        e(picked())


def test_a_missing_scope_attribute_is_an_evaluation_error() -> None:
    with pytest.raises(EvaluationError, match="wait_s"):
        expr("wait_s > 1")(Scope())


# -- refused at compile time -----------------------------------------------------------------

REFUSED = [
    # (source, line, col, phrase)
    ("data.__class__", 12, 12, "'__class__': attributes starting with '_' are not allowed"),
    ("data.sku.upper()", 12, 16, "'upper': methods cannot be called"),
    ('getattr(data, "sku")', 12, 7, "unknown function 'getattr'"),
    ('eval("1")', 12, 7, "unknown function 'eval'"),
    ('open("/etc/passwd")', 12, 7, "the functions allowed here are: price, zone_of"),
    ('__import__("os")', 12, 7, "unknown function '__import__'"),
    ("pric(data.sku)", 12, 7, "did you mean 'price'?"),
    ("data.qty if (lambda: 1) else 0", 12, 20, "lambda is not allowed"),
    ("[x for x in data.sku]", 12, 7, "list comprehensions are not allowed"),
    # a generator expression that is the sole argument starts at the call's "("
    ("price(x for x in data.sku)", 12, 12, "generator expressions are not allowed"),
    ("zone_of(1, (x for x in data.sku))", 12, 18, "generator expressions are not allowed"),
    ("{k: 1 for k in data.sku}", 12, 7, "dict comprehensions are not allowed"),
    ("{k for k in data.sku}", 12, 7, "set comprehensions are not allowed"),
    ("(n := 1) > 0", 12, 8, "':=' is not allowed"),
    ('f"{data.sku}"', 12, 7, "use a template field instead"),
    ("price(*data.sku)", 12, 13, "'*' unpacking is not allowed"),
    ("price(**data)", 12, 13, "'**' unpacking is not allowed"),
    ("[*data.sku]", 12, 8, "'*' unpacking is not allowed"),
    ("x = 1", 12, 7, "assignments are not allowed"),
    ("data.qty += 1", 12, 7, "assignments are not allowed"),
    ('type == "x"; data', 12, 20, "only one expression is allowed"),
    ("import os", 12, 7, "imports are not allowed"),
    ("from os import path", 12, 7, "imports are not allowed"),
    ("if data: pass", 12, 7, "'if' statements are not allowed"),
    ("await data", 12, 7, "'await' is not allowed"),
    ("(yield data)", 12, 8, "'yield' is not allowed"),
    ('{"a": 1}', 12, 7, "dict literals are not allowed"),
    ("data.qty | 1", 12, 16, "the operator '|' is not allowed"),
    ("data.qty <<  (1)", 12, 16, "the operator '<<' is not allowed"),
    ("~data.qty", 12, 7, "the operator '~' is not allowed"),
    ("data.qty is 2", 12, 19, "'is' compares only with None"),
    ('b"beer" == data.sku', 12, 7, "bytes literals are not allowed"),
    ("1j + data.qty", 12, 7, "complex numbers are not allowed"),
    ("...", 12, 7, "'...' is not allowed"),
    ('dat.sku == "x"', 12, 7, "unknown name 'dat' (did you mean 'data'?)"),
    ("_secret", 12, 7, "names starting with '_' are not allowed"),
    ("price", 12, 7, "'price' is a function; call it"),
    ("price(1)(2)", 12, 7, "only the functions the rule pack provides can be called"),
    ("data.sku.gi_frame", 12, 16, "interpreter internals are not allowed"),
    ("data.qty +* 2", 12, 17, "syntax error: invalid syntax"),
    ("data.sku)", 12, 15, "unmatched ')'"),
    ("(data.sku", 12, 7, "'(' was never closed"),
    ("'é' + x.__doc__", 12, 15, "'__doc__'"),  # columns count characters, not UTF-8 bytes
    # multi-line (a YAML block scalar): the bad node on the second line
    ("data.qty >= 2 and\n  data.__dict__", 13, 14, "'__dict__': attributes starting with '_'"),
    ('data.qty >= 2 and\n  data.sku == = "x"', 13, 21, "syntax error"),
    ("data.qty >= 2 and\n  data.sku ==", 13, 20, "syntax error"),
    ("data.qty\ndata.sku", 13, 7, "only one expression is allowed"),
]


@pytest.mark.parametrize(("source", "line", "col", "phrase"), REFUSED)
def test_refused_with_place_and_reason(source: str, line: int, col: int, phrase: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expr(source, WHERE, names=(*NAMES, "x"), functions=FUNCTIONS, constants=CONSTANTS)
    err = info.value
    assert isinstance(err, SourceError)
    assert (err.file, err.line, err.col) == ("rules.yaml", line, col), str(err)
    assert phrase in err.message
    assert str(err).startswith(f"rules.yaml:{line}:{col}: ")
    assert "\n" not in err.message


def test_unknown_name_lists_the_allowed_ones() -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expr("qty > 1", WHERE, names=["type", "data"], functions={})
    assert info.value.message == ("unknown name 'qty'; the names allowed here are: data, type")
    with pytest.raises(ExpressionError, match="no names are allowed here"):
        compile_expr("qty > 1", WHERE, names=[], functions={})


def test_deep_nesting_is_an_expression_error() -> None:
    for source in ("-" * 100_000 + "1", "(" * 300 + "1" + ")" * 300, "not " * 5000 + "data"):
        with pytest.raises(ExpressionError):
            expr(source)


def test_engine_supplied_names_must_be_plain_identifiers() -> None:
    with pytest.raises(ValueError, match="cannot be used"):
        compile_expr("x", WHERE, names=["_s"], functions={})
    with pytest.raises(ValueError, match="cannot be used"):
        compile_expr("x", WHERE, names=["x"], functions={"not": len})


# -- security --------------------------------------------------------------------------------

ESCAPES = [
    "().__class__.__bases__[0].__subclasses__()",
    "().__class__",
    "''.__class__.__mro__[1]",
    "(lambda: 0)",
    "(lambda: 0)()",
    "[x for x in ()]",
    "[c for c in ().__class__.__base__.__subclasses__()]",
    '{x: 1 for x in "ab"}',
    "(x for x in ())",
    'type("a", (), {})',
    'getattr(data, "__dict__")',
    "setattr(data, 'sku', 'x')",
    "__builtins__",
    '__builtins__["eval"]',
    "data.__dict__",
    "data.__reduce_ex__(2)",
    "globals()",
    "locals()",
    "vars(data)",
    "dir()",
    '__import__("os").system("id")',
    'eval("1")',
    'exec("x = 1")',
    'compile("1", "f", "eval")',
    'open("/etc/passwd").read()',
    "breakpoint()",
    "help()",
    "data.sku.__class__.__mro__",
    '"{0.__class__}".format(data)',
    "price.__globals__",
    "price.__code__.co_consts",
    "price.__closure__",
    "data.gi_frame.f_globals",
    "data.f_back",
    'f"{data.__class__}"',
    "(x := data)",
    "[*data]",
    "price(**{'a': 1})",
    "import os",
    "data.sku; __import__('os')",
    "(yield)",
    "(await data)",
    "price(1).__class__",
    "price.mro",
    "_",
    "__name__",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_sandbox_escapes_are_refused_at_compile_time(source: str) -> None:
    with pytest.raises(ExpressionError):
        expr(source)
    with pytest.raises(ExpressionError):
        template("{ " + source + " }")


@pytest.mark.parametrize(
    "source",
    ["data.qty + price(data.sku) ** 2 if data.sku in age_restricted else limit", "type"],
)
def test_compiled_functions_load_no_global_name(source: str) -> None:
    e = expr(source)
    ops = {i.opname for i in dis.get_instructions(e.fn)}
    assert not ops & {"LOAD_GLOBAL", "LOAD_NAME", "IMPORT_NAME", "STORE_GLOBAL"}
    assert e.fn.__globals__["__builtins__"] == {"__import__": builtins.__import__}
    t = template("{at:%H:%M} {data.sku}")
    assert not {i.opname for i in dis.get_instructions(t.fn)} & {"LOAD_GLOBAL", "LOAD_NAME"}


# -- templates -------------------------------------------------------------------------------


def test_template_formats_placeholders() -> None:
    scope = Scope(wait_s=93.4, data=ev.ZoneData(zone="checkout-queue"), type="zone.exited")
    t = template("Waited {wait_s:.0f} s at {data.zone}")
    assert t(scope) == "Waited 93 s at checkout-queue"
    assert t.paths == {("wait_s",), ("data", "zone")}
    assert t.names == {"wait_s", "data"}


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("{data.qty}", "2"),
        ("{data.qty:>4}|", "   2|"),
        ("{data.qty * price(data.sku) / 100:.2f} EUR", "5.00 EUR"),
        ("{data.sku!r}", "'beer'"),
        ("{data.sku!s:>6}", "  beer"),
        ("{{literal}} {data.sku} }}{{", "{literal} beer }{"),
        ("no placeholders", "no placeholders"),
        ("", ""),
        ("{data.qty != 3}", "True"),
        ('{"}" + data.sku}', "}beer"),
        ("{ {'a', 'a'} }", "{'a'}"),
        ("{at:%H:%M}", "00:00"),
        ("{price(data.sku) if data.qty > 1 else 0:,}", "250"),
        ("{data.sku[1:3]}", "ee"),
        ("{data.qty}\n{subject}", "2\nv-1"),
        ("{'big' if data.qty > limit else 'small'}", "small"),
    ],
)
def test_template_values(source: str, value: str) -> None:
    assert template(source)(picked()) == value


@pytest.mark.parametrize(
    ("source", "line", "col", "phrase"),
    [
        ("Waited {data.__class__}", 12, 20, "attributes starting with '_'"),
        ("a {data.qty} b {dta.sku}", 12, 23, "did you mean 'data'?"),
        ("a { data.qty +* 1}", 12, 21, "syntax error"),
        ("x {data.sku.upper()}", 12, 19, "methods cannot be called"),
        ("first\nthen {dta}", 13, 13, "unknown name 'dta'"),
        ("{data.sku", 12, 7, "'{' was never closed"),
        ("a } b", 12, 9, "write '}}' for a literal brace"),
        ("a {} b", 12, 9, "empty placeholder"),
        ("{data.sku!x}", 12, 16, "a conversion must be !r, !s or !a"),
        ("{data.qty:{limit}}", 12, 17, "placeholders inside a format spec"),
        ("{f'{data}'}", 12, 8, "use a template field instead"),
    ],
)
def test_template_errors_point_into_placeholders(
    source: str, line: int, col: int, phrase: str
) -> None:
    with pytest.raises(ExpressionError) as info:
        template(source)
    err = info.value
    assert (err.line, err.col) == (line, col), str(err)
    assert phrase in err.message


def test_template_runtime_error() -> None:
    t = template("{data.qty:.2q}")
    with pytest.raises(EvaluationError, match=r"evaluating '\{data.qty:.2q\}': ValueError"):
        t(picked())


# -- a property: the same value as Python's own eval ----------------------------------------


def _arith(depth: int) -> st.SearchStrategy[str]:
    leaf = st.one_of(st.integers(-5, 5).map(str), st.sampled_from(["a", "b", "c"]))
    if depth == 0:
        return leaf
    sub = _arith(depth - 1)
    return st.one_of(
        leaf,
        st.tuples(sub, st.sampled_from(["+", "-", "*", "/", "//", "%"]), sub).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        st.tuples(sub, st.integers(0, 3)).map(lambda t: f"({t[0]} ** {t[1]})"),
        sub.map(lambda s: f"(-{s})"),
        st.tuples(sub, _boolean(depth - 1), sub).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
    )


def _boolean(depth: int) -> st.SearchStrategy[str]:
    sub = _arith(depth)
    comparison = st.tuples(sub, st.sampled_from(["<", "<=", "==", "!=", ">", ">="]), sub).map(
        lambda t: f"({t[0]} {t[1]} {t[2]})"
    )
    membership = st.tuples(sub, st.sampled_from(["in", "not in"]), st.lists(
        st.integers(-5, 5), max_size=4
    )).map(lambda t: f"({t[0]} {t[1]} {t[2]!r})")  # fmt: skip
    leaf = st.one_of(comparison, membership, st.sampled_from(["True", "False"]))
    if depth == 0:
        return leaf
    inner = _boolean(depth - 1)
    return st.one_of(
        leaf,
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        inner.map(lambda s: f"(not {s})"),
        st.tuples(sub, st.sampled_from(["and", "or"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
    )


def _python(source: str, env: dict[str, int]) -> tuple[str, Any]:
    try:
        return "value", eval(source, {"__builtins__": {}}, dict(env))
    except ZeroDivisionError:
        return "error", ZeroDivisionError


class ABC:
    __slots__ = ("a", "b", "c")

    def __init__(self, a: int, b: int, c: int) -> None:
        self.a, self.b, self.c = a, b, c


@settings(max_examples=400, deadline=None)
@given(
    source=st.one_of(_arith(3), _boolean(2)),
    a=st.integers(-4, 4),
    b=st.integers(-4, 4),
    c=st.integers(-4, 4),
)
def test_same_value_as_python_eval(source: str, a: int, b: int, c: int) -> None:
    compiled = compile_expr(source, WHERE, names=["a", "b", "c"], functions={})
    kind, expected = _python(source, {"a": a, "b": b, "c": c})
    if kind == "error":  # guarded: a division by zero is an EvaluationError
        with pytest.raises(EvaluationError) as info:
            compiled(ABC(a, b, c))
        assert isinstance(info.value.__cause__, expected)
        return
    got = compiled(ABC(a, b, c))
    assert type(got) is type(expected)
    assert got == expected or (got != got and expected != expected)
