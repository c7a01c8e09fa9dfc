"""QA scenarios: simulated shoppers with expectations, run through the real pipeline.

A scenario file names a store layout, a time span, who comes (shoppers scripted step by step,
or a crowd drawn from a persona mix), how noisy the sensors are, and what the standard rule
packs must make of it (``docs/scenarios.md``). ``aisle scenario run`` publishes the events
into the log, reads them back in the order the engine service applies them, runs an engine
set as the service's over them, publishes what it derived, and checks every expectation: the
same path a store's events take, so a scenario's outcome is what ``aisle engine run`` derives.

Each run gets a store id of its own, the layout's id and a hash of its clean events, so
scenarios never see each other's events, a rerun finds its own already in the log (and adds
nothing), and a changed simulator or layout never mixes its events with an older run's.
"""

from __future__ import annotations

import asyncio
import copy
import difflib
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import msgspec
import typer
from msgspec import Meta, Struct
from rich.markup import escape

from core import events as ev
from core.config import Settings
from core.console import Console
from core.durations import parse_duration
from core.jetstream import JetStreamLog
from core.layout import Layout, LayoutError, load_layout
from core.log import publish_in_order, read_arrived
from core.natsd import NatsServerError
from core.runtime import open_log
from core.yamlsource import (
    PathKey,
    SourceError,
    SourceErrors,
    YamlDocument,
    convert,
    convert_all,
    load_yaml,
    pruned,
)
from rules.loader import PACKS, PackError, load_rules, pack_files
from rules.reference import Reference
from rules.service.partition import ServiceConfig
from simulator import noise as sensor_noise
from simulator.day import (
    DEFAULT_MIX,
    Mix,
    Run,
    alert_thresholds,
    simulate,
)
from simulator.scenario_report import (
    Check,
    Expect,
    Expectation,
    Outcome,
    Result,
    check,
    expectations,
    report_lines,
    summary,
    write_junit,
)
from simulator.shoppers import SOURCE, Act, Persona, Store, Visitor, play, position_events

PAY_S = 2.0  # standing in the exit gate while it charges the cart
# Taking or putting back an item takes a frame: two picks of one SKU at one instant would be
# one event (ids are content hashes), as two sensor reports of the same pick are.
HANDLE_S = 0.5
SAMPLE_TYPES = sorted(ev.SAMPLE_TYPES)

Name = Annotated[str, Meta(min_length=1, max_length=128)]
Duration = str | int | float
WORDS = ("enter", "pay", "leave", "leave_by_entrance")
KEYS = ("go", "wait", "queue", "take", "put_back", "take_unsure")


# -- the file format ---------------------------------------------------------------------


class _Spec(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class ShopperSpec(_Spec):
    id: Name
    at: Duration = 0
    persona: str | None = None
    group: Name | None = None
    member: Name | None = None
    staff: bool = False
    speed: Annotated[float, Meta(ge=0.3, le=3.0)] = 1.2
    steps: list[str | dict[str, Any]] = []


class CrowdSpec(_Spec):
    shoppers: Annotated[int, Meta(ge=1, le=10_000)]
    seed: int = 1
    mix: Mix = DEFAULT_MIX


class ScenarioSpec(_Spec):
    scenario: Name
    layout: str
    start: str
    expect: Expect
    description: str = ""
    hours: Annotated[float, Meta(gt=0, le=24)] = 1.0
    shoppers: list[ShopperSpec] | None = None
    crowd: CrowdSpec | None = None
    noise: str | dict[str, Any] = "off"
    seed: int = 1  # of the noise
    lateness: Duration | None = None
    heartbeat: Duration | None = None
    watchlist: dict[str, str] = {}


@dataclass
class Scenario:
    """A checked scenario file, ready to run."""

    name: str
    file: str
    line: int
    store: Store  # under the layout's own store id; a run renames it
    start: datetime
    hours: float
    visitors: list[Visitor]
    passers_by: list[tuple[str, datetime]]
    crowd: CrowdSpec | None
    noise: sensor_noise.NoiseProfile
    seed: int
    lateness_s: float
    heartbeat_s: float | None
    watchlist: dict[str, str]
    expectations: list[Expectation] = field(default_factory=list)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(hours=self.hours)


# -- loading -----------------------------------------------------------------------------


def _suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _seconds(doc: YamlDocument, path: PathKey, value: Duration) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise doc.error(path, str(exc)) from None


@cache
def _store(path: Path, mtime: float) -> Store:
    return Store(load_layout(path))


class _Places:
    """Where a step's names lead in one store: shelves, zones, SKUs."""

    def __init__(self, doc: YamlDocument, store: Store) -> None:
        self.doc, self.store = doc, store
        layout = store.layout
        self.shelves = {s.id: s for s in layout.shelves}
        self.zones = {z.id: z for z in layout.zones}
        self.skus = {c.sku for c in layout.catalog}

    def place(self, path: PathKey, name: Any, staff: bool) -> tuple[float, float]:
        if name in self.shelves:
            return self.store.front(self.shelves[name])
        zone = self.zones.get(name)
        if zone is None:
            known = [*self.shelves, *self.zones]
            raise self.doc.error(
                path, f"unknown shelf or zone {name!r}{_suggest(str(name), known)}"
            )
        if zone.kind == "staff_only" and not staff:
            raise self.doc.error(
                path, f"{name} is staff only: shoppers cannot walk there (staff: true)"
            )
        return self._inside(zone)

    def _inside(self, zone: Any) -> tuple[float, float]:
        """The walkable point of the zone nearest its centre (an L-shaped aisle's centre may
        be a gondola)."""
        pts = zone.polygon
        cx, cy = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
        floor = self.store.staff_floor
        if zone.contains(cx, cy) and floor.walkable((cx, cy)):
            return cx, cy
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        step = floor.cell_m
        grid = [
            (min(xs) + step * (i + 0.5), min(ys) + step * (j + 0.5))
            for i in range(int((max(xs) - min(xs)) / step))
            for j in range(int((max(ys) - min(ys)) / step))
        ]
        inside = [p for p in grid if zone.contains(*p) and floor.walkable(p)]
        return min(inside or [(cx, cy)], key=lambda p: (p[0] - cx) ** 2 + (p[1] - cy) ** 2)

    def item(self, path: PathKey, value: Any, word: str) -> tuple[str, str]:
        """``sku`` or ``sku <word> shelf``: (shelf, sku); the shelf defaults to the SKU's."""
        if not isinstance(value, str) or not value.strip():
            raise self.doc.error(path, f"expected a SKU, optionally '<sku> {word} <shelf>'")
        sku, _, shelf = (p.strip() for p in value.partition(f" {word} "))
        if sku not in self.skus:
            raise self.doc.error(path, f"unknown SKU {sku!r}{_suggest(sku, sorted(self.skus))}")
        if not shelf:
            holding = [s.id for s in self.store.layout.shelves if sku in s.skus]
            if not holding:
                raise self.doc.error(path, f"no shelf holds {sku}: say '{sku} {word} <shelf>'")
            return holding[0], sku
        if shelf not in self.shelves:
            raise self.doc.error(
                path, f"unknown shelf {shelf!r}{_suggest(shelf, list(self.shelves))}"
            )
        if word == "from" and sku not in self.shelves[shelf].skus:
            raise self.doc.error(path, f"shelf {shelf} holds no {sku}")
        return shelf, sku


def _acts(places: _Places, path: PathKey, steps: list[Any], staff: bool) -> list[Act]:
    """A visitor's steps as the simulator's acts; every visit starts on the pavement outside
    the entrance."""
    store = places.store
    acts = [Act(to=store.outside_in)]
    errors: list[SourceError] = []
    for j, step in enumerate(steps):
        try:
            acts += _act(places, (*path, j), step, staff)
        except SourceError as exc:
            errors.append(exc)  # every step's problem, not only the first of the visitor
    if errors:
        raise errors[0] if len(errors) == 1 else SourceErrors(errors)
    return acts


def _act(places: _Places, here: PathKey, step: Any, staff: bool) -> list[Act]:
    """One step as the simulator's acts."""
    store, doc = places.store, places.doc
    if isinstance(step, str):
        if step not in WORDS:
            raise doc.error(
                here,
                f"unknown step {step!r}{_suggest(step, [*WORDS, *KEYS])}: one of "
                f"{', '.join(WORDS)}, or {', '.join(k + ': ...' for k in KEYS)}",
            )
        return {
            "enter": [Act(to=store.inside_in)],
            "pay": [Act(to=store.gate, wait_s=PAY_S)],
            "leave": [Act(to=store.outside_out)],
            "leave_by_entrance": [Act(to=store.outside_in)],
        }[step]
    if len(step) != 1 or next(iter(step)) not in KEYS:
        key = next((k for k in step if k not in KEYS), next(iter(step), ""))
        raise doc.error(
            (*here, key),
            f"a step is one of {', '.join(WORDS)} or one of "
            f"{', '.join(k + ': ...' for k in KEYS)}; got {', '.join(map(str, step))}",
            key=True,
        )
    key, value = next(iter(step.items()))
    at = (*here, key)
    if key == "go":
        return [Act(to=places.place(at, value, staff))]
    if key == "wait":
        return [Act(wait_s=_seconds(doc, at, value))]
    if key == "queue":
        return [Act(to=store.queue, wait_s=_seconds(doc, at, value))]
    if key == "take":
        return [Act(wait_s=HANDLE_S, take=places.item(at, value, "from"))]
    if key == "take_unsure":
        shelf, sku = places.item(at, value, "from")
        weighed = {sl.sku for sl in places.shelves[shelf].slots if sl.sensor}
        if sku not in weighed:
            raise places.doc.error(
                at, f"{sku} on {shelf} is on no weighed slot (a slot with a sensor)"
            )
        return [Act(wait_s=HANDLE_S, take=(shelf, sku), unsure=True)]
    return [Act(wait_s=HANDLE_S, back=places.item(at, value, "on"))]


def _persona(doc: YamlDocument, i: int, s: ShopperSpec) -> Persona:
    """The persona the simulator plays: staff and leaving by the entrance change how a
    visitor walks (staff rooms, the way round the gate); otherwise it is a label."""
    label = Persona.MISSION
    if s.persona is not None:
        try:
            label = Persona(s.persona)
        except ValueError:
            names = [p.value for p in Persona]
            raise doc.error(
                ("shoppers", i, "persona"),
                f"unknown persona {s.persona!r}{_suggest(s.persona, names)}: "
                f"one of {', '.join(names)}",
            ) from None
    if s.staff or label is Persona.STAFF:
        return Persona.STAFF
    if "leave_by_entrance" in s.steps:
        return Persona.NO_RECEIPT
    return label


def _expectation_errors(doc: YamlDocument, spec: ScenarioSpec, errors: list[SourceError]) -> None:
    """What the types do not say of ``expect``, every problem of it."""
    for i, x in enumerate([*spec.expect.alerts.must, *spec.expect.alerts.must_not]):
        if x.alert == "*" and i < len(spec.expect.alerts.must):
            errors.append(
                doc.error(("expect", "alerts", "must", i, "alert"), "'*' only in must_not")
            )
    for i, x in enumerate(spec.expect.alerts.must_not):
        if x.count is not None:
            errors.append(
                doc.error(("expect", "alerts", "must_not", i, "count"), "no count in must_not")
            )
    for i, e in enumerate(spec.expect.events):
        if e.type not in ev.EVENT_TYPES:
            errors.append(
                doc.error(
                    ("expect", "events", i, "type"),
                    f"unknown event type {e.type!r}{_suggest(e.type, sorted(ev.EVENT_TYPES))}",
                )
            )
    for i, h in enumerate(spec.expect.heatmap):
        if (h.cells is None) == (h.at is None and h.dwell_s is None) or (
            h.at is not None and h.visits is None and h.dwell_s is None
        ):
            errors.append(
                doc.error(
                    ("expect", "heatmap", i),
                    "a heatmap expectation is cells: N, dwell_s: S (all cells), "
                    "or at: [x, y] with visits and/or dwell_s",
                )
            )


def _shoppers(
    doc: YamlDocument,
    spec: ScenarioSpec,
    store: Store,
    start: datetime,
    errors: list[SourceError],
) -> tuple[list[Visitor], list[tuple[str, datetime]]]:
    """The visitors and passers-by; each shopper's first problem goes to ``errors``."""
    places = _Places(doc, store)
    visitors: list[Visitor] = []
    passers: list[tuple[str, datetime]] = []
    seen: set[str] = set()
    for i, s in enumerate(spec.shoppers or ()):
        try:
            if s.id in seen:
                raise doc.error(
                    ("shoppers", i, "id"), f"shopper {s.id!r} is already in the scenario"
                )
            seen.add(s.id)
            one = _shopper(doc, spec, store, start, places, i, s)
        except SourceError as exc:
            errors += _each(exc)
            continue
        if isinstance(one, Visitor):
            visitors.append(one)
        else:
            passers.append(one)
    return visitors, passers


def _shopper(
    doc: YamlDocument,
    spec: ScenarioSpec,
    store: Store,
    start: datetime,
    places: _Places,
    i: int,
    s: ShopperSpec,
) -> Visitor | tuple[str, datetime]:
    """One shopper of the file: a visitor, or a passer-by's id and time."""
    offset = _seconds(doc, ("shoppers", i, "at"), s.at)
    if offset > spec.hours * 3600:
        raise doc.error(
            ("shoppers", i, "at"), f"{s.at} is after the scenario's end (hours: {spec.hours})"
        )
    try:
        persona = _persona(doc, i, s)
    except SourceError as exc:  # the steps' problems too, as if it were the default
        try:
            _acts(places, ("shoppers", i, "steps"), s.steps, bool(s.staff))
        except SourceError as more:
            raise SourceErrors([exc, *_each(more)]) from None
        raise
    at = start + timedelta(seconds=offset)
    if persona is Persona.PASSERBY:
        if s.steps:
            raise doc.error(("shoppers", i, "steps"), "a passer-by does not come in: no steps")
        if store.passby is None:
            raise doc.error(("shoppers", i, "persona"), "the layout has no passby line")
        return s.id, at
    acts = _acts(places, ("shoppers", i, "steps"), s.steps, persona is Persona.STAFF)
    return Visitor(
        s.id, persona, at, group=s.group, member=s.member, speed=s.speed, acts=tuple(acts)
    )


def _each(exc: SourceError) -> list[SourceError]:
    """The problems an error stands for: its own, or each of several."""
    return list(exc.errors) if isinstance(exc, SourceErrors) else [exc]


def _start(doc: YamlDocument, text: str, layout: Layout) -> datetime:
    try:
        start = datetime.fromisoformat(text)
    except ValueError:
        raise doc.error(
            ("start",), f"{text!r} is not an ISO time, e.g. 2026-11-28T10:00 (store time)"
        ) from None
    return start if start.tzinfo else start.replace(tzinfo=ZoneInfo(layout.store.timezone))


def _noise(doc: YamlDocument, value: str | dict[str, Any]) -> sensor_noise.NoiseProfile:
    if isinstance(value, dict):
        return convert(doc, sensor_noise.NoiseProfile, path=("noise",), data=value)
    named = {"off": sensor_noise.OFF, "default": sensor_noise.DEFAULT}
    if value not in named:
        raise doc.error(("noise",), f"noise is off, default, or a mapping of knobs; got {value!r}")
    return named[value]


def load_scenario(path: str | Path) -> Scenario:
    """Load and check a scenario file; ``SourceError`` (file:line:col) if it is not valid,
    a ``SourceErrors`` with every problem found when there are several."""
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise doc.error((), "a scenario file is a mapping: scenario, layout, start, expect...")
    if isinstance(doc.data.get("start"), datetime):
        doc.data["start"] = doc.data["start"].isoformat()
    errors: list[SourceError] = []
    expect = doc.data.get("expect")
    receipts = expect.get("receipts") if isinstance(expect, dict) else None
    if isinstance(receipts, str) and receipts != "exact":
        errors.append(
            doc.error(
                ("expect", "receipts"),
                f"receipts: exact, {{within: 0.99}} or a list of {{cart, lines}}; got {receipts!r}",
            )
        )
        expect["receipts"] = "exact"  # type: ignore[index]  # checked; look for the rest
    spec, found = convert_all(doc, ScenarioSpec)
    errors += found
    if spec is None:  # check the rest of the file too: without its broken sections
        rest = pruned(doc, ScenarioSpec, doc.data)
        rest.setdefault("expect", {})
        try:
            spec = msgspec.convert(rest, ScenarioSpec)
        except msgspec.ValidationError:
            raise SourceErrors(errors) from None
    _expectation_errors(doc, spec, errors)
    if spec.shoppers is not None and spec.crowd is not None:
        errors.append(doc.error(("crowd",), "give shoppers or a crowd, not both", key=True))
    lateness = heartbeat = None
    profile = sensor_noise.OFF
    try:
        profile = _noise(doc, spec.noise)
        if spec.lateness is not None:
            lateness = _seconds(doc, ("lateness",), spec.lateness)
    except SourceError as exc:
        errors.append(exc)
    where: PathKey = ("lateness",) if spec.lateness is not None else ("noise",)
    if lateness is None:  # what the noise module says absorbs its late delivery and skew
        lateness = profile.late_s + 2 * profile.clock_skew_s
    if conflict := ServiceConfig("scenario", lateness_s=lateness).clock_conflict():
        errors.append(
            doc.error(where, f"a lateness of {lateness:g}s, which the engine refuses: {conflict}")
        )
    if spec.heartbeat is not None:
        try:
            heartbeat = _seconds(doc, ("heartbeat",), spec.heartbeat)
            if heartbeat < 1:
                errors.append(doc.error(("heartbeat",), "a heartbeat at most every second"))
        except SourceError as exc:
            errors.append(exc)
    layout_path = Path(path).parent / spec.layout
    try:
        store = _store(layout_path.resolve(), layout_path.stat().st_mtime)
    except OSError as exc:
        errors.append(doc.error(("layout",), f"cannot read layout {spec.layout}: {exc.strerror}"))
        raise SourceErrors(errors) from None
    except LayoutError as exc:
        listed = "\n  ".join(str(e) for e in exc.errors)
        errors.append(doc.error(("layout",), f"layout {spec.layout} has errors:\n  {listed}"))
        raise SourceErrors(errors) from None
    try:
        start = _start(doc, spec.start, store.layout)
    except SourceError as exc:
        errors.append(exc)
        start = datetime(2000, 1, 1, tzinfo=ZoneInfo(store.layout.store.timezone))
    visitors, passers = _shoppers(doc, spec, store, start, errors)
    if errors:
        raise SourceErrors(errors)
    return Scenario(
        name=spec.scenario,
        file=str(path),
        line=doc.where(("scenario",))[0],
        store=store,
        start=start,
        hours=spec.hours,
        visitors=visitors,
        passers_by=passers,
        crowd=spec.crowd,
        noise=profile,
        seed=spec.seed,
        lateness_s=lateness,
        heartbeat_s=heartbeat,
        watchlist=dict(spec.watchlist),
        expectations=expectations(spec.expect, lambda p: doc.where(p)[0]),
    )


# -- the events --------------------------------------------------------------------------


def _renamed(store: Store, store_id: str) -> Store:
    """The same store under another id: the walkable floors (and their path caches) are
    shared, only the layout the events name changes."""
    layout = store.layout
    other = copy.copy(store)
    other.layout = msgspec.structs.replace(
        layout, store=msgspec.structs.replace(layout.store, id=store_id)
    ).prepare()
    return other


def build(sc: Scenario, store: Store, packs: Sequence[Path]) -> Run:
    """The clean events of the scenario in ``store``, and the truth: its alerts are those
    ``packs`` should raise."""
    sid = store.layout.store.id
    if sc.crowd is not None:
        run = simulate(
            store,
            sc.start,
            hours=sc.hours,
            shoppers=sc.crowd.shoppers,
            seed=sc.crowd.seed,
            mix=sc.crowd.mix,
            packs=packs,
        )
    else:
        thresholds = alert_thresholds(packs)
        played = [(v, *play(store, v, thresholds)) for v in sc.visitors]
        events = [e for _, es, _ in played for e in es]
        events += position_events(store, [(v, t) for v, _, t in played])
        line = store.passby.id if store.passby else "passby"
        events += [
            ev.new(
                ev.PasserbySeen,
                store=sid,
                at=at,
                source=SOURCE,
                subject=pid,
                data=ev.PasserbyData(line=line),
            )
            for pid, at in sc.passers_by
        ]
        members = {v.member: "enrolled" for v in sc.visitors if v.member}
        run = Run(events, list(sc.visitors), [t for _, _, t in played], len(sc.passers_by), members)
    if sc.heartbeat_s:
        n = int(sc.hours * 3600 / sc.heartbeat_s)
        run.events += [
            ev.new(
                ev.StoreHeartbeat,
                store=sid,
                at=sc.start + timedelta(seconds=k * sc.heartbeat_s),
                source=SOURCE,
                subject="scenario",
                data=ev.HeartbeatData(),
            )
            for k in range(n + 1)
        ]
    run.events.sort(key=lambda e: (e.at, e.id))
    return run


def store_id(sc: Scenario, clean: Sequence[ev.Event]) -> str:
    h = hashlib.sha256(sc.name.encode())
    h.update(msgspec.json.encode([sc.noise, sc.seed, sc.lateness_s]))
    for e in clean:
        h.update(e.id.encode())
    return f"{sc.store.layout.store.id}-{h.hexdigest()[:10]}"


# -- through the pipeline ----------------------------------------------------------------


async def _publish_new(log: JetStreamLog, events: list[ev.Event], held: set[str]) -> int:
    """Publish what the log does not hold yet: a rerun adds nothing, however much later.
    In order across the log's streams, as a store's adapters deliver: the service merges
    the streams by arrival."""
    new = [e for e in events if e.id not in held]
    await publish_in_order(log, new)
    held.update(e.id for e in new)
    return len(new)


@dataclass
class Staged:
    """A scenario in a store of its own: the clean run with its truth, and the events the
    sensors deliver (noise applied), in delivery order."""

    store: Store
    run: Run
    delivered: list[ev.Event]


def stage(sc: Scenario, packs: Sequence[Path]) -> Staged:
    """The scenario as it runs against ``packs`` (its truth follows their thresholds)."""
    sid = store_id(sc, build(sc, sc.store, packs).events)
    store = _renamed(sc.store, sid)
    run = build(sc, store, packs)
    delivered = sensor_noise.apply(run.events, sc.noise, seed=sc.seed, layout=store.layout)
    return Staged(store, run, delivered)


async def run_scenario(log: JetStreamLog, sc: Scenario, packs: Sequence[Path]) -> Outcome:
    """Publish the scenario's events, then derive from what the log holds as the engine
    service would: in its order (``read_arrived``: the streams merged by arrival, what the
    log refuses to replay left out, as the service refuses it) and with its settings (the
    scenario's lateness, the service's idle bound). The service leaves windows open until
    the store's clock passes them; a scenario then moves the clock a day past its end, so
    that every window closes (``Outcome.closed``)."""
    began = time.perf_counter()
    staged = stage(sc, packs)
    store, run, delivered = staged.store, staged.run, staged.delivered
    sid = store.layout.store.id

    held = {r.event.id async for r in log.replay(store=sid)}
    held |= {r.event.id async for r in log.replay(store=sid, types=SAMPLE_TYPES)}
    new = await _publish_new(log, delivered, held)
    inputs = await read_arrived(log, sid)

    reference = Reference.of(store.layout, members=run.members, watchlist=sc.watchlist)
    service = ServiceConfig("scenario", lateness_s=sc.lateness_s)
    rules = load_rules(packs, reference)
    engine = service.engine(rules)
    out = engine.process(inputs)
    last = max([sc.end, *(e.at for e in inputs)])
    closing = engine.advance(sid, last.timestamp() + 24 * 3600)  # close every window
    out.extend(closing)
    new += await _publish_new(log, out.derived, held)
    return Outcome(
        store=sid,
        truth_receipts=run.receipts(),
        truth_alerts={(t.visitor, name) for t in run.truth for name in t.alerts},
        inputs=inputs,
        derived=out.derived,
        published=len(delivered),
        new=new,
        late=len(out.late),
        closed=len(closing.derived),
        rule_errors=[f"{e.rule}: {e.message}" for e in out.errors],
        seconds=time.perf_counter() - began,
        alert_names=frozenset(
            r.output.alert.name for r in rules.rules if r.output and r.output.alert
        ),
    )


# -- the command -------------------------------------------------------------------------

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def scenario_files(paths: Sequence[Path]) -> list[Path]:
    """Files as given; in a folder, every scenario under it, subfolders too, in path
    order (a suite kept in folders ran only its top: the rest silently not). A YAML file
    of a folder that is not a scenario (a layout beside them) is left out."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += [f for f in sorted(p.rglob("*.yaml")) if _is_scenario(f)]
        else:
            files.append(p)
    return files


def _is_scenario(path: Path) -> bool:
    try:
        data = load_yaml(path).data
    except SourceError:
        return True  # its run says what is wrong with it
    return isinstance(data, dict) and "scenario" in data


def _print(result: Result) -> None:
    marks = {
        "head": "",
        "pass": "  [green]PASS[/] ",
        "fail": "  [red]FAIL[/] ",
        "detail": "       ",
    }
    for kind, text in report_lines(result):
        body = f"[bold]{escape(text)}[/]" if kind == "head" else escape(text)
        out.print(marks[kind] + body, soft_wrap=True)


async def run_files(
    settings: Settings, scenarios: Sequence[Scenario], packs: Sequence[Path]
) -> list[Result]:
    results = []
    async with open_log(settings, name="aisle-scenario", create=True) as log:
        for sc in scenarios:
            outcome = await run_scenario(log, sc, packs)
            checks = [check(x, outcome) for x in sc.expectations]
            if outcome.rule_errors:
                checks.append(
                    Check(
                        "the rule packs ran without errors",
                        sc.line,
                        False,
                        "no rule errors",
                        f"{len(outcome.rule_errors)} rule errors",
                        tuple(outcome.rule_errors[:10]),
                    )
                )
            seeds = {"noise_seed": sc.seed}
            if sc.crowd is not None:
                seeds["crowd_seed"] = sc.crowd.seed
            result = Result(sc.file, sc.name, outcome, checks, seeds)
            _print(result)
            results.append(result)
    return results


scenario_app = typer.Typer(
    help="QA scenarios: simulated shoppers and expectations, run through the real pipeline.",
    no_args_is_help=True,
)


@scenario_app.command("run")
def run_command(
    paths: Annotated[list[Path], typer.Argument(help="Scenario files, or folders of them.")],
    junit: Annotated[
        Path | None,
        typer.Option("--junit", help="Write JUnit XML here (one case per expectation)."),
    ] = None,
    packs: Annotated[
        list[Path] | None,
        typer.Option("--packs", help="Rule pack files or folders to run (repeatable)."),
    ] = None,
) -> None:
    """Run scenarios through the log and the engine: a report per expectation.

    Exit code 1 if any expectation fails, 2 if a scenario file is invalid (the others
    run all the same, and the report lists it).
    """
    began = time.perf_counter()
    files = scenario_files(paths)
    scenarios, errors = [], []
    for f in files:
        try:
            scenarios.append(load_scenario(f))
        except SourceError as exc:
            errors.append(exc)
    for e in errors:
        err.print(escape(str(e)), soft_wrap=True)
    if not files:
        err.print("no scenario files")
        raise typer.Exit(2)
    files = pack_files(packs or [PACKS])
    if missing := [p for p in files if not p.is_file()]:
        err.print(f"[red]error:[/] --packs: no such pack file {escape(str(missing[0]))}")
        raise typer.Exit(2)
    if not files:
        err.print(
            f"[red]error:[/] --packs: no rule packs in {escape(', '.join(map(str, packs or [])))}"
        )
        raise typer.Exit(2)
    try:
        alert_thresholds(files)  # what the truth follows: a bad pack stops here
    except ValueError as exc:
        err.print(f"[red]error:[/] --packs: {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    try:
        results = asyncio.run(run_files(Settings.from_env(), scenarios, files)) if scenarios else []
    except PackError as exc:  # valid alone, invalid against a scenario's store
        for e in exc.errors:
            err.print(escape(str(e)), soft_wrap=True)
        raise typer.Exit(2) from None
    except NatsServerError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    if junit is not None:
        write_junit(junit, results, errors)
    failed = any(r.failed for r in results)
    line = summary(results, time.perf_counter() - began)
    if errors:
        line += f"; {len(errors)} file(s) not valid scenarios, not run"
    out.print(f"[red]{line}[/]" if failed or errors else f"[green]{line}[/]")
    raise typer.Exit(2 if errors else 1 if failed else 0)


def register(app: typer.Typer) -> None:
    app.add_typer(scenario_app, name="scenario")
