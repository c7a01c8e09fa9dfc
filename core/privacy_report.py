"""The retention schedule and what each event holds, as a Markdown page a store can
publish (Illinois' BIPA asks for a public retention schedule; GDPR for the same in the
privacy notice). Made from the deployment's own configuration: what it prints is what
the streams are set to keep."""

from __future__ import annotations

from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

from core import events as ev
from core.config import LogConfig
from core.privacy import ENVELOPE, FIELDS, FROM_BIOMETRICS, DataClass

# What people find in each stream, in plain words.
_STREAM_HOLDS = {
    "events": "entries and exits, zone visits, items picked and put back, receipts, alerts, "
    "face matches of enrolled members, staff sessions, what operators did",
    "samples": "where each tracked person was on the floor, about once a second, under a "
    "per-visit number",
    "deadletter": "events that were refused (malformed or out of bounds), kept to be checked",
}
_CLASS_WORDS = {
    DataClass.PERSONAL: "names or links a person",
    DataClass.PSEUDONYMOUS: "a number for one visit only",
}


def _kept(seconds: float) -> str:
    if seconds <= 0:
        return "until removed (no time limit is set: set one, `AISLE_RETENTION_EVENTS=180d`)"
    days = seconds / 86400
    if days >= 1 and days == int(days):
        return f"{int(days)} day{'s' if days != 1 else ''}"
    hours = seconds / 3600
    return f"{hours:g} hours" if hours >= 1 else f"{seconds:g} seconds"


def report(log: LogConfig, store: str = "this store") -> str:
    try:
        made_by = f"aisle {version('aisle')}"
    except PackageNotFoundError:
        made_by = "aisle"
    today = datetime.now(UTC).date().isoformat()
    rows = [
        ("Business events", "events", log.events_stream, log.events_max_age_s),
        ("Position samples", "samples", log.samples_stream, log.samples_max_age_s),
        ("Dead letters", "deadletter", log.deadletter_stream, log.deadletter_max_age_s),
    ]
    lines = [
        f"# What {store} keeps about the people it sees, and for how long",
        "",
        f"Made by {made_by} on {today} from the deployment `{log.prefix}`.",
        "",
        "## Retention",
        "",
        "| What | Holds | Kept for |",
        "|---|---|---|",
    ]
    for what, key, stream, max_age in rows:
        lines.append(f"| {what} (`{stream}`) | {_STREAM_HOLDS[key]} | {_kept(max_age)} |")
    lines += [
        "| Camera video and images | never stored: the cameras' adapters turn them into "
        "the events above in memory | not kept |",
        "| Face templates of enrolled members | the enrolment store, encrypted, never the "
        "event log | until the member revokes consent |",
        "| Read models: visits, picks, carts, receipts, alerts, face matches, ten-second "
        "heatmaps | made from the business events | as long as the business events |",
        "| Read models: hourly metrics, occupancy, hourly and daily heatmaps | counts for the "
        "store, of no one | kept |",
        "",
        "No face image, face crop, template or embedding is ever written to the event log, "
        "a read model or a log line. A shopper is a new random number at each visit.",
        "",
        "## What each event holds about people",
        "",
        "Every event carries the store, a time, the camera or sensor that saw it, and the "
        f"visit's number (`subject`: {_CLASS_WORDS[DataClass.PSEUDONYMOUS]}). Beyond that:",
        "",
        "| Event | Personal (names or links a person) | Per visit | From face matching |",
        "|---|---|---|---|",
    ]
    for event_type in sorted(ev.EVENT_TYPES):
        fields = FIELDS[event_type]
        personal = [p for p, c in fields.items() if c is DataClass.PERSONAL]
        visit = [p for p, c in fields.items() if c is DataClass.PSEUDONYMOUS]
        if not personal and not visit and event_type not in FROM_BIOMETRICS:
            continue
        face = (
            "yes: members who enrolled with consent only" if event_type in FROM_BIOMETRICS else ""
        )
        lines.append(f"| `{event_type}` | {_names(personal)} | {_names(visit)} | {face} |")
    others = sorted(
        t
        for t in ev.EVENT_TYPES
        if all(c is DataClass.OPERATIONAL for c in FIELDS[t].values()) and t not in FROM_BIOMETRICS
    )
    lines += [
        "",
        "These hold nothing about a person beyond the visit's number: "
        + ", ".join(f"`{t}`" for t in others)
        + ".",
        "",
        f"(The envelope of every event: {', '.join(f'`{k}`' for k in ENVELOPE)}.)",
        "",
    ]
    return "\n".join(lines)


def _names(paths: list[str]) -> str:
    return ", ".join(f"`{p.removeprefix('data.')}`" for p in paths) or "-"
