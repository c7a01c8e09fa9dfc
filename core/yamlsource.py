"""YAML files people write by hand, loaded with the line and column of every value.

Store layouts, rule packs and scenarios are YAML; an error in one must say
``file:line:col: what is wrong``. This module loads YAML into plain Python values with a
position map, and converts them into typed msgspec structs, turning a validation error's
``$.path`` back into the place in the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_args, get_origin

import msgspec
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

T = TypeVar("T")
PathKey = tuple[str | int, ...]

MAX_BYTES = 4 * 2**20  # a file's size unless its kind says otherwise (docs/layout.md)
MAX_ALIASED = 10_000  # values that aliases (``*name``) may stand for, in one file
MAX_NESTING = 100  # mappings and lists inside each other


class SourceError(ValueError):
    """A problem at a place in a source file; ``str()`` gives ``file:line:col: message``."""

    def __init__(self, file: str, line: int, col: int, message: str) -> None:
        super().__init__(f"{file}:{line}:{col}: {message}")
        self.file = file
        self.line = line
        self.col = col
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "col": self.col, "message": self.message}


class SourceErrors(SourceError):
    """Several problems in one file, in file order: ``str()`` gives one line each, the
    first's place is the error's own, and ``errors`` holds them all."""

    def __init__(self, errors: list[SourceError]) -> None:
        self.errors = sorted(errors, key=lambda e: (e.line, e.col))
        first = self.errors[0]
        super().__init__(first.file, first.line, first.col, first.message)
        self.args = ("\n".join(str(e) for e in self.errors),)


@dataclass
class YamlDocument:
    """Plain data (dicts, lists, scalars) and where each part of it came from (1-based)."""

    file: str
    data: Any
    positions: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    key_positions: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    text: str = ""

    def where(self, path: PathKey, *, key: bool = False) -> tuple[int, int]:
        """The position of ``path``, or of its nearest ancestor that has one."""
        table = self.key_positions if key else self.positions
        p = tuple(path)
        while p:
            if p in table:
                return table[p]
            if key and p in self.positions:
                return self.positions[p]
            p = p[:-1]
        return self.positions.get((), (1, 1))

    def error(self, path: PathKey, message: str, *, key: bool = False) -> SourceError:
        line, col = self.where(path, key=key)
        return SourceError(self.file, line, col, message)


class _Budget:
    """What a file's aliases have expanded to so far: a few hundred bytes of anchors and
    aliases (a "billion laughs") would otherwise stand for billions of values."""

    def __init__(self) -> None:
        self.seen: set[int] = set()  # the mappings and lists met so far
        self.inside = 0  # how many aliases the walk is inside
        self.alias: PathKey = ()  # where the outermost of them is used
        self.in_list = False  # ...as an item of a list (whose own place ruamel reports)
        self.left = MAX_ALIASED


def _plain(
    node: Any, path: PathKey, doc: YamlDocument, budget: _Budget | None = None, depth: int = 0
) -> Any:
    budget = budget or _Budget()
    if budget.inside:
        budget.left -= 1
        if budget.left < 0:
            # An alias in a list has its anchor's place: point at the list that uses it.
            raise doc.error(
                budget.alias[:-1] if budget.in_list else budget.alias,
                f"aliases (*name) stand for more than {MAX_ALIASED} values in this file; "
                "write the values out",
            )
    if isinstance(node, CommentedMap | CommentedSeq):
        if depth >= MAX_NESTING:
            raise doc.error(path, f"nested more than {MAX_NESTING} levels deep")
        alias = id(node) in budget.seen
        budget.seen.add(id(node))
        if alias and not budget.inside:
            budget.alias, budget.in_list = path, bool(path) and isinstance(path[-1], int)
        budget.inside += alias
        try:
            return _container(node, path, doc, budget, depth + 1)
        finally:
            budget.inside -= alias
    # ruamel's scalar subclasses (ScalarFloat, ScalarInt...) become plain values: msgspec
    # refuses subclasses where it expects float, int or Decimal.
    if isinstance(node, datetime):  # ruamel's TimeStamp: msgspec wants a plain datetime
        return datetime(*node.timetuple()[:6], node.microsecond, tzinfo=node.tzinfo)
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


def _container(
    node: CommentedMap | CommentedSeq, path: PathKey, doc: YamlDocument, budget: _Budget, depth: int
) -> Any:
    if isinstance(node, CommentedMap):
        out: dict[Any, Any] = {}
        for k, v in node.items():
            child = (*path, k)
            if k in node.lc.data:
                kl, kc = node.lc.key(k)
                vl, vc = node.lc.value(k)
            else:  # merged in by ``<<: *anchor``: placed where the map starts
                kl = vl = node.lc.line
                kc = vc = node.lc.col
            doc.key_positions[child] = (kl + 1, kc + 1)
            doc.positions[child] = (vl + 1, vc + 1)
            out[k] = _plain(v, child, doc, budget, depth)
        return out
    items = []
    for i, v in enumerate(node):
        line, col = node.lc.item(i)
        doc.positions[(*path, i)] = (line + 1, col + 1)
        items.append(_plain(v, (*path, i), doc, budget, depth))
    return items


def _read(source: str | Path, name: str, max_bytes: int) -> str:
    """A file's text: refused if larger than ``max_bytes`` (before reading it) or not UTF-8."""
    try:
        with open(source, "rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as exc:
        raise SourceError(name, 0, 0, f"cannot read file: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:
        raise SourceError(name, 1, 1, _too_large(max_bytes))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        col = len(before[before.rfind(b"\n") + 1 :].decode("utf-8", errors="replace")) + 1
        byte = raw[exc.start]
        raise SourceError(name, line, col, f"not UTF-8 (byte 0x{byte:02x}): {exc.reason}") from None


def _too_large(max_bytes: int) -> str:
    return f"the file is larger than {max_bytes // 2**20} MiB, the most this kind of file may be"


_BRACKETS = re.compile(r"[\[\]{}'\"\n]")


def _too_deep_in_brackets(text: str) -> tuple[int, int] | None:
    """Where brackets (``[[[...``) first nest past ``MAX_NESTING``, if they do: looked for
    before parsing, as the parser takes seconds to give up on a megabyte of them."""
    if text.count("[") + text.count("{") <= MAX_NESTING:
        return None
    depth, line, start, quote = 0, 1, 0, ""
    for m in _BRACKETS.finditer(text):
        ch = m.group()
        if ch == "\n":
            line, start, quote = line + 1, m.end(), ""
        elif quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return line, m.end() - start
        else:
            depth -= 1
    return None


def _too_deep(text: str) -> tuple[int, int]:
    """Where a document too deeply nested for the parser first goes past ``MAX_NESTING``:
    in brackets, else the most indented line."""
    if (at := _too_deep_in_brackets(text)) is not None:
        return at
    lines = text.split("\n")
    indents = [len(s) - len(s.lstrip(" -")) for s in lines]
    deepest = max(range(len(lines)), key=indents.__getitem__, default=0)
    return deepest + 1, indents[deepest] + 1 if indents else 1


def load_yaml(
    source: str | Path, *, text: str | None = None, max_bytes: int = MAX_BYTES
) -> YamlDocument:
    """Load one YAML document from a file (or from ``text``, named ``source``).

    Every file is bounded: its size (``max_bytes``), its encoding (UTF-8), its nesting and
    what its aliases expand to, each refused with a ``file:line:col`` error.
    """
    name = str(source)
    if text is None:
        text = _read(source, name, max_bytes)
    elif len(text) > max_bytes or len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise SourceError(name, 1, 1, _too_large(max_bytes))
    if (deep := _too_deep_in_brackets(text)) is not None:
        raise SourceError(name, *deep, f"nested more than {MAX_NESTING} levels deep")
    yaml = YAML(typ="rt", pure=True)
    try:
        root = yaml.load(text)
    except RecursionError:
        line, col = _too_deep(text)
        raise SourceError(name, line, col, f"nested more than {MAX_NESTING} levels deep") from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
        raise SourceError(name, line, col, f"YAML syntax: {problem}") from None
    except YAMLError as exc:
        raise SourceError(name, 1, 1, f"YAML syntax: {exc}") from None
    doc = YamlDocument(name, None, text=text)
    doc.positions[()] = (1, 1)
    doc.data = _plain(root, (), doc)
    return doc


_AT = re.compile(r"^(.*?)(?: - at `\$(.*)`)?$", re.S)
_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def parse_path(text: str) -> PathKey:
    """``.zones[2].polygon`` -> ``("zones", 2, "polygon")``."""
    return tuple(
        m.group(1) if m.group(1) is not None else int(m.group(2)) for m in _SEGMENT.finditer(text)
    )


def convert(doc: YamlDocument, typ: type[T], *, path: PathKey = (), data: Any = None) -> T:
    """Convert the document (or the part at ``path``) into ``typ``, errors placed in the file."""
    value = doc.data if data is None else data
    try:
        return msgspec.convert(value, typ)
    except msgspec.ValidationError as exc:
        m = _AT.match(str(exc))
        reason, where = (m.group(1), m.group(2) or "") if m else (str(exc), "")
        full = (*path, *_locate(value, typ, where))
        unknown = re.match(r"Object contains unknown field `([^`]+)`", reason)
        if unknown:
            name = unknown.group(1)
            raise doc.error((*full, name), f"unknown field {name!r}", key=True) from None
        missing = re.match(r"Object missing required field `([^`]+)`", reason)
        if missing:
            raise doc.error(full, f"missing required field {missing.group(1)!r}") from None
        place = _place(full)
        raise doc.error(
            full, f"{place}: {_friendly(reason)}" if place else _friendly(reason)
        ) from None


def convert_all(
    doc: YamlDocument, typ: type[T], *, path: PathKey = (), data: Any = None
) -> tuple[T | None, list[SourceError]]:
    """``convert``, but on failure every problem of the value, field by field, not just the
    first that msgspec meets: one run of a checker then shows them all."""
    value = doc.data if data is None else data
    try:
        return convert(doc, typ, path=path, data=value), []
    except SourceError as first:
        errors = _struct_errors(doc, typ, path, value)
        if not any((e.line, e.col) == (first.line, first.col) for e in errors):
            errors.append(first)
        unique = {(e.line, e.col, e.message): e for e in errors}
        return None, sorted(unique.values(), key=lambda e: (e.line, e.col))


def _struct_errors(doc: YamlDocument, typ: Any, path: PathKey, value: Any) -> list[SourceError]:
    """The errors of each field of a struct (and of each item of a list of structs)."""
    typ = get_args(typ)[0] if get_origin(typ) is Annotated else typ
    if get_origin(typ) in (list, tuple) and isinstance(value, list):
        item = get_args(typ)[0]
        return [e for i, v in enumerate(value) for e in _value_errors(doc, item, (*path, i), v)]
    if not (isinstance(typ, type) and issubclass(typ, msgspec.Struct) and isinstance(value, dict)):
        return []
    fields = {f.encode_name: f for f in msgspec.structs.fields(typ)}
    errors: list[SourceError] = []
    if typ.__struct_config__.forbid_unknown_fields:
        for key in value:
            if key not in fields:
                errors.append(doc.error((*path, key), f"unknown field {key!r}", key=True))
    for name, f in fields.items():
        if name in value:
            errors += _value_errors(doc, f.type, (*path, name), value[name])
        elif f.required:
            errors.append(doc.error(path, f"missing required field {name!r}"))
    return errors


def pruned(doc: YamlDocument, typ: type[msgspec.Struct], data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without what does not convert to ``typ`` (unknown keys, values of the wrong
    type; a mapping for a struct is pruned in turn): a checker that has reported those can
    check the rest of the file too."""
    fields = {f.encode_name: f for f in msgspec.structs.fields(typ)}
    out: dict[str, Any] = {}
    for k, v in data.items():
        f = fields.get(k)
        if f is None:
            continue
        if not _value_errors(doc, f.type, (k,), v):
            out[k] = v
        elif (
            isinstance(f.type, type) and issubclass(f.type, msgspec.Struct) and isinstance(v, dict)
        ):
            out[k] = pruned(doc, f.type, v)
    return out


def _value_errors(doc: YamlDocument, typ: Any, path: PathKey, value: Any) -> list[SourceError]:
    try:
        convert(doc, typ, path=path, data=value)
    except SourceError as exc:
        return _struct_errors(doc, typ, path, value) or [exc]
    return []


def _locate(value: Any, typ: Any, where: str) -> PathKey:
    """The path of msgspec's ``$...``; for a value in a mapping (``[...]``: msgspec does not
    say which key) the key is found by converting with one entry of the mapping at a time."""
    if "[...]" not in where:
        return parse_path(where)
    head, _, rest = where.partition("[...]")
    prefix = parse_path(head)
    mapping = value
    for part in prefix:
        mapping = mapping[part]
    for key in list(mapping):
        trial = _replaced(value, prefix, {key: mapping[key]})
        try:
            msgspec.convert(trial, typ)
        except msgspec.ValidationError:
            return (*prefix, key, *parse_path(rest))
    return prefix


def _replaced(value: Any, path: PathKey, new: Any) -> Any:
    if not path:
        return new
    head, *rest = path
    copy = list(value) if isinstance(value, list) else dict(value)
    copy[head] = _replaced(value[head], tuple(rest), new)  # type: ignore[index]
    return copy


# A pattern's meaning in words, for errors: "a name of lower-case letters..." where the
# message read "expected str matching regex '^[a-z][a-z0-9_]*(\\.[a-z0-9_]+)*$'".
PATTERN_WORDS: dict[str, str] = {}


def described(pattern: str, words: str) -> str:
    """``pattern``, remembered with what it means for the errors that name it."""
    PATTERN_WORDS[pattern] = words
    return pattern


def _friendly(reason: str) -> str:
    m = re.fullmatch(r"Expected `str` matching regex '(.*)'", reason, re.S)
    if m:
        pattern = m.group(1).encode().decode("unicode_escape")
        if pattern in PATTERN_WORDS:
            return f"expected {PATTERN_WORDS[pattern]}"
    return reason.replace("Expected `", "expected `").replace("`", "")


def _place(path: PathKey) -> str:
    """``("rules", 0, "metric")`` as ``rules[0].metric``."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else f".{p}" if out else str(p)
    return out
