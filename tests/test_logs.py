"""Log lines: JSON for machines, text for people, both with the structured fields."""

from __future__ import annotations

import json
import logging

from core.logs import JsonFormatter, TextFormatter


def _record() -> logging.LogRecord:
    record = logging.makeLogRecord({"msg": "store taken", "levelname": "INFO", "name": "x"})
    record.store, record.worker = "corner-01", "w1"  # as extra= sets them
    return record


def test_a_text_log_line_names_its_fields_as_a_json_line_does() -> None:
    text = TextFormatter().format(_record())
    assert text.endswith("INFO store taken store=corner-01 worker=w1"), text
    entry = json.loads(JsonFormatter().format(_record()))
    assert (entry["msg"], entry["store"], entry["worker"]) == ("store taken", "corner-01", "w1")
