"""Bounds that hold before the YAML parser runs: a megabyte of brackets took the parser
seconds to give up on (through ``POST /rules/validate`` as well as on files)."""

from __future__ import annotations

import pytest
from ruamel.yaml import YAML

from core.yamlsource import MAX_NESTING, SourceError, load_yaml


def _unparsed(self: YAML, text: str) -> None:
    raise AssertionError("the parser ran")


@pytest.mark.parametrize(
    ("text", "place"),
    [
        ("rules: " + "[" * 500_000 + "]" * 500_000, (1, 8 + MAX_NESTING)),
        ("rules:\n" + "[\n" * 300_000, (MAX_NESTING + 2, 1)),
        ("a: {b: " * 300 + "}" * 300, (1, 7 * MAX_NESTING + 4)),
    ],
)
def test_brackets_nested_too_deep_are_refused_before_parsing(
    monkeypatch: pytest.MonkeyPatch, text: str, place: tuple[int, int]
) -> None:
    monkeypatch.setattr(YAML, "load", _unparsed)
    with pytest.raises(SourceError) as info:
        load_yaml("pack.yaml", text=text, max_bytes=2**21)
    assert ((info.value.line, info.value.col), info.value.message) == (
        place,
        f"nested more than {MAX_NESTING} levels deep",
    )


def test_brackets_in_quotes_and_many_shallow_lists_are_not_nesting() -> None:
    text = "a: '" + "[" * 300 + "'\nb: [" + ", ".join(["[1, 2]"] * 200) + "]\n"
    doc = load_yaml("ok.yaml", text=text)
    assert doc.data["a"] == "[" * 300 and len(doc.data["b"]) == 200
