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
from typing import Any, TypeVar

import msgspec
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

T = TypeVar("T")
PathKey = tuple[str | int, ...]


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


def _plain(node: Any, path: PathKey, doc: YamlDocument) -> Any:
    if isinstance(node, CommentedMap):
        out: dict[Any, Any] = {}
        for k, v in node.items():
            child = (*path, k)
            kl, kc = node.lc.key(k)
            vl, vc = node.lc.value(k)
            doc.key_positions[child] = (kl + 1, kc + 1)
            doc.positions[child] = (vl + 1, vc + 1)
            out[k] = _plain(v, child, doc)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for i, v in enumerate(node):
            line, col = node.lc.item(i)
            doc.positions[(*path, i)] = (line + 1, col + 1)
            items.append(_plain(v, (*path, i), doc))
        return items
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


def load_yaml(source: str | Path, *, text: str | None = None) -> YamlDocument:
    """Load one YAML document from a file (or from ``text``, named ``source``)."""
    name = str(source)
    if text is None:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise SourceError(name, 0, 0, f"cannot read file: {exc.strerror or exc}") from None
    yaml = YAML(typ="rt", pure=True)
    try:
        root = yaml.load(text)
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
        place = ".".join(str(p) for p in full)
        raise doc.error(
            full, f"{place}: {_friendly(reason)}" if place else _friendly(reason)
        ) from None


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


def _friendly(reason: str) -> str:
    return reason.replace("Expected `", "expected `").replace("`", "")
