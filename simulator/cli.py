"""The simulator's commands: ``aisle demo``, ``aisle simulate`` and ``aisle render``."""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

import msgspec
import typer

from core import events as ev
from core.access import Role
from core.cli import run
from core.config import Settings
from core.console import Console
from core.jetstream import JetStreamLog
from core.layout import Layout, chain_store_ids, load_layout
from core.log import publish_in_order
from core.progress import Steps
from core.runtime import open_log
from simulator.day import PACKS, alert_thresholds, simulate, standard_packs
from simulator.demo import demo
from simulator.eyes import report
from simulator.eyes.report import TargetError, parse_targets
from simulator.eyes.video import DETECTORS, Request, VideoError, at_fps, check_video, film
from simulator.render import RenderOptions, render_camera
from simulator.shelfcam import reaches_from_events, render_shelf_camera

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "stores" / "convenience.yaml"
out = Console()


def _chain(layout: Layout, stores: int) -> list[Layout]:
    """``stores`` copies of a layout under their own store ids (a chain of one design)."""
    return [
        msgspec.structs.replace(layout, store=msgspec.structs.replace(layout.store, id=store))
        for store in chain_store_ids(layout.store.id, stores)
    ]


async def _paced(log: JetStreamLog, events: list[ev.Event], speed: float = 1.0) -> None:
    """Publish as the events happen: a second of store time takes a second of wall time,
    or ``1 / speed`` of one (``aisle serve --demo`` shows a day in minutes)."""
    if not events:
        return
    began, first = time.monotonic(), events[0].at
    i = 0
    while i < len(events):
        due = (events[i].at - first).total_seconds() / speed - (time.monotonic() - began)
        if due > 0:
            await asyncio.sleep(due)
        now = (time.monotonic() - began) * speed
        j = i + 1
        while j < len(events) and (events[j].at - first).total_seconds() <= now:
            j += 1
        await log.publish_many(events[i:j])
        i = j


async def simulate_chain(
    settings: Settings,
    layouts: list[Layout],
    start: datetime,
    hours: float,
    shoppers: int,
    seed: int,
    truth_dir: Path | None,
    publish: bool,
    realtime: bool = False,
    packs: list[Path] | None = None,
    *,
    speed: float = 1.0,
) -> None:
    """``packs``: the rule packs whose alerts the truth predicts (default: the standard ones);
    ``realtime``: every store's events published together as they happen, ``speed`` times
    faster than the clock."""
    totals = Counter[str]()
    began = time.perf_counter()

    async def each(log: JetStreamLog | None) -> None:
        together: list[list[ev.Event]] = []  # real time: every store at once, as a chain runs
        with Steps("simulating stores", len(layouts)) as progress:
            for k, layout in enumerate(layouts):
                run = simulate(
                    layout, start, hours=hours, shoppers=shoppers, seed=seed + k, packs=packs
                )
                totals["events"] += len(run.events)
                totals["visitors"] += len(run.visitors)
                totals["receipts"] += len(run.receipts())
                if truth_dir is not None:
                    truth_dir.mkdir(parents=True, exist_ok=True)
                    path = truth_dir / f"{layout.store.id}.truth.jsonl"
                    path.write_bytes(
                        b"\n".join(msgspec.json.encode(r) for r in run.truth_records())
                    )
                    receipts = truth_dir / f"{layout.store.id}.receipts.json"
                    receipts.write_bytes(msgspec.json.encode(run.receipts()))
                if log is not None and realtime:
                    together.append(run.events)
                elif log is not None:  # as the store's adapters would: the service
                    await publish_in_order(log, run.events)  # merges its streams by arrival
                progress.advance()
        if log is not None and together:
            await _paced(log, list(heapq.merge(*together, key=lambda e: e.at)), speed)

    if publish:
        async with open_log(settings, name="aisle-simulate", role=Role.ADAPTER, create=True) as log:
            await each(log)
    else:
        await each(None)
    took = time.perf_counter() - began
    done = "published" if publish else "generated"
    out.print(
        f"{done} {totals['events']:,} events of {totals['visitors']:,} visitors in "
        f"{len(layouts)} store(s), {hours:g} h each, in {took:.1f} s "
        f"({totals['events'] / took:,.0f} events/s); {totals['receipts']:,} receipts due"
    )


VIDEO_HOURS, VIDEO_SHOPPERS = 0.25, 10
"""``--video``'s span and visitors when not given: every frame of it is rendered and
watched, so a quarter of an hour rather than a day."""


async def simulate_video(
    settings: Settings, request: Request, folder: Path, targets: report.Targets, junit: Path | None
) -> bool:
    """Film the span, run the adapters on it and the packs on both sides; print the report
    (and write JUnit). True if every target was met."""
    began = time.perf_counter()
    cameras = len(request.layout.cameras)
    with Steps(f"filming {cameras} cameras", cameras) as progress:
        the = film(request, folder, on_camera=lambda camera, frames: progress.advance())
    total = sum(the.frames.values())
    how = "reused" if the.reused else "rendered"
    out.print(
        f"film {how}: {cameras} cameras, {total:,} frames, {the.crossings} door crossings, "
        f"{len(the.run.visitors)} visitors, in {folder}"
    )
    with Steps("adapters on the film: frames", total) as progress:
        checked = await check_video(settings, the, lambda p: progress.update(p.total_frames))
    figures = report.figures_of(checked)
    rows = report.rows(checked, figures, targets)
    took = time.perf_counter() - began
    title = (
        f"the eyes against the truth: store {checked.truth.store} (truth) and "
        f"{checked.video.store} (adapters, {request.detector}), {request.hours:g} h from "
        f"{request.start.isoformat()}"
    )
    wide = Console(width=max(out.width, 120))  # a narrow pipe would fold every row
    wide.print(report.table(rows, title))
    failed = [r for r in rows if r.status == "fail"]
    skipped = [r for r in rows if r.status == "skip"]
    checks = [r for r in rows if r.status != "info"]
    for r in skipped:
        out.print(f"[yellow]skipped[/] {r.metric}: {r.why}")
    line = (
        f"{len(checks)} metrics: {len(checks) - len(failed) - len(skipped)} passed, "
        f"{len(failed)} failed, {len(skipped)} skipped; adapters {checked.seconds:.1f} s "
        f"({total / max(checked.seconds, 1e-9):.1f} frames/s), {took:.1f} s in all"
    )
    out.print(f"[red]{line}[/]" if failed else f"[green]{line}[/]")
    if junit is not None:
        report.write_junit(junit, rows, checked.video.store, took)
        out.print(f"JUnit: {junit}")
    return not failed


def register(app: typer.Typer) -> None:
    @app.command("render")
    def render_command(
        store: Annotated[Path, typer.Option("--store", help="Store layout file.")] = EXAMPLE,
        camera: Annotated[
            str | None, typer.Option(help="Camera id; default: every camera of the layout.")
        ] = None,
        minutes: Annotated[float, typer.Option(help="Minutes of shopping to film.")] = 2.0,
        shoppers: Annotated[int, typer.Option(help="Visitors in those minutes.")] = 12,
        seed: Annotated[int, typer.Option(help="Same seed, same video.")] = 1,
        out_dir: Annotated[Path, typer.Option("--out", help="Where the videos go.")] = Path(
            "render"
        ),
        video: Annotated[
            bool, typer.Option(help="Write the videos; --no-video writes the ground truth only.")
        ] = True,
    ) -> None:
        """Film simulated shoppers: a video per camera, with MOTChallenge ground truth;
        and a video per shelf camera, with the truth of who reached into which slot."""
        layout = load_layout(store)
        known = [c.id for c in layout.cameras] + [c.id for c in layout.shelf_cameras]
        if camera is not None and camera not in known:
            raise typer.BadParameter(
                f"{camera!r}; cameras: {', '.join(known)}", param_hint="--camera"
            )
        start = datetime(2026, 11, 28, 12, 0, tzinfo=ZoneInfo(layout.store.timezone))
        run = simulate(layout, start, hours=minutes / 60, shoppers=shoppers, seed=seed)
        out_dir.mkdir(parents=True, exist_ok=True)
        for cam in [c for c in layout.cameras if camera in (None, c.id)]:
            stats = render_camera(
                layout,
                cam.id,
                run.people(cam.fps),
                out_dir / f"{cam.id}.mp4" if video else None,
                out_dir / f"{cam.id}.gt.txt",
                RenderOptions(seed=seed),
            )
            made = f"{stats.video_path} ({stats.codec}), " if stats.video_path else ""
            out.print(
                f"{cam.id}: {stats.frames:,} frames, {stats.boxes:,} boxes "
                f"-> {made}{out_dir / cam.id}.gt.txt"
            )
        shelf_cams = [c for c in layout.shelf_cameras if camera in (None, c.id)]
        if shelf_cams and video:
            origin = min(v.start for v in run.visitors)
            floor = [
                ev.new(
                    ev.PositionSamples,
                    store=layout.store.id,
                    at=v.start + timedelta(seconds=t),
                    source="simulator",
                    subject="floor",
                    data=ev.PositionData(frame=0, samples=(ev.PositionSample(v.id, x, y),)),
                )
                for v, truth in zip(run.visitors, run.truth, strict=True)
                for t, x, y in truth.path
            ]
            for sc in shelf_cams:
                reaches = reaches_from_events(layout, sc.id, [*floor, *run.events], origin)
                path = out_dir / f"{sc.id}.avi"
                truth_of = render_shelf_camera(layout, sc.id, reaches, path, seed=seed)
                moved = sum(t.action != "none" for t in truth_of)
                out.print(
                    f"{sc.id}: {len(truth_of)} reaches, {moved} picks and put-backs "
                    f"-> {path} and {path}.truth.json"
                )

    @app.command("simulate")
    def simulate_command(
        store: Annotated[Path, typer.Option("--store", help="Store layout file.")] = EXAMPLE,
        hours: Annotated[
            float | None, typer.Option(help="Opening hours to simulate (default 15).")
        ] = None,
        shoppers: Annotated[
            int | None, typer.Option(help="Visitors per store (default 300).")
        ] = None,
        seed: Annotated[int, typer.Option(help="Same seed, same events.")] = 1,
        stores: Annotated[int, typer.Option(help="A chain: this many stores of this layout.")] = 1,
        opens: Annotated[
            str, typer.Option("--opens", help="When the day starts, local time (ISO).")
        ] = "2026-11-28T07:00",
        truth: Annotated[
            Path | None, typer.Option(help="Write the ground truth here, a file per store.")
        ] = None,
        publish: Annotated[bool, typer.Option(help="Publish into the log.")] = True,
        realtime: Annotated[
            bool, typer.Option(help="Publish as it happens (for demos and latency tests).")
        ] = False,
        speed: Annotated[
            float,
            typer.Option(
                min=0.001,
                max=1e6,
                help="--realtime: this many seconds of store time a second (60: a day in "
                "15 minutes).",
            ),
        ] = 1.0,
        packs: Annotated[
            Path,
            typer.Option(
                help="The rule packs whose alerts the truth predicts (their folder).",
                exists=True,
                file_okay=False,
            ),
        ] = PACKS,
        video: Annotated[
            bool,
            typer.Option(
                "--video",
                help="Film every camera, run the adapters on the film, and compare what the "
                "packs make of it with the truth (report, exit code 1 if a target is missed). "
                f"Default span {VIDEO_HOURS:g} h, {VIDEO_SHOPPERS} shoppers.",
            ),
        ] = False,
        video_dir: Annotated[
            Path | None,
            typer.Option(
                help="--video: where the film goes (default: the data folder's video/KEY); "
                "a film of the same request there is reused."
            ),
        ] = None,
        junit: Annotated[
            Path | None, typer.Option(help="--video: write JUnit XML here (a case per metric).")
        ] = None,
        target: Annotated[
            list[str] | None,
            typer.Option(help="--video: a target NAME=VALUE over the defaults (repeatable)."),
        ] = None,
        fps: Annotated[
            float | None,
            typer.Option(help="--video: film every camera at this rate (default: the layout's)."),
        ] = None,
        detector: Annotated[
            str, typer.Option(help=f"--video: the detector ({', '.join(DETECTORS)}).")
        ] = "mog2",
    ) -> None:
        """Simulate shoppers in a store (or a chain) and publish their events into the log."""
        layout = load_layout(store)
        try:
            start = datetime.fromisoformat(opens)
        except ValueError:
            raise typer.BadParameter(
                f"{opens!r} is not an ISO time", param_hint="--opens"
            ) from None
        if start.tzinfo is None:
            start = start.replace(tzinfo=ZoneInfo(layout.store.timezone))
        files = standard_packs(packs)
        try:
            alert_thresholds(files)  # read once (cached): a bad pack stops here, in one line
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--packs") from None
        if video:
            _video(
                layout,
                start,
                hours,
                shoppers,
                seed,
                files,
                detector,
                fps,
                target,
                video_dir,
                junit,
                stores=stores,
                realtime=realtime,
                publish=publish,
                truth=truth,
            )
            return
        for name, given in (
            ("--video-dir", video_dir),
            ("--junit", junit),
            ("--target", target),
            ("--fps", fps),
            ("--detector", detector != "mog2" or None),
        ):
            if given:
                raise typer.BadParameter("only with --video", param_hint=name)
        if speed != 1.0 and not realtime:
            raise typer.BadParameter("only with --realtime", param_hint="--speed")
        hours = 15.0 if hours is None else hours
        shoppers = 300 if shoppers is None else shoppers
        args = (start, hours, shoppers, seed, truth, publish, realtime, files)
        chain = _chain(layout, stores)
        run(lambda settings: simulate_chain(settings, chain, *args, speed=speed))

    def _video(
        layout: Layout,
        start: datetime,
        hours: float | None,
        shoppers: int | None,
        seed: int,
        packs: list[Path],
        detector: str,
        fps: float | None,
        targets: list[str] | None,
        folder: Path | None,
        junit: Path | None,
        *,
        stores: int,
        realtime: bool,
        publish: bool,
        truth: Path | None,
    ) -> None:
        for name, bad in (
            ("--stores", stores != 1),
            ("--realtime", realtime),
            ("--no-publish", not publish),
            ("--truth", truth is not None),
        ):
            if bad:
                why = "the film folder holds the truth" if name == "--truth" else "one store"
                raise typer.BadParameter(f"not with --video ({why})", param_hint=name)
        try:
            wanted = parse_targets(targets or [])
            request = Request(
                layout=at_fps(layout, fps),
                start=start,
                hours=VIDEO_HOURS if hours is None else hours,
                shoppers=VIDEO_SHOPPERS if shoppers is None else shoppers,
                seed=seed,
                packs=tuple(packs),
                detector=detector,
            )
        except (TargetError, VideoError) as exc:
            raise typer.BadParameter(str(exc)) from None
        where = folder or Settings.from_env().data_dir / "video" / request.key
        try:
            ok = run(lambda settings: simulate_video(settings, request, where, wanted, junit))
        except VideoError as exc:
            raise typer.BadParameter(str(exc)) from None
        raise typer.Exit(0 if ok else 1)

    @app.command("demo")
    def demo_command(
        layout_file: Annotated[Path, typer.Option("--layout", help="Store layout file.")] = EXAMPLE,
        shoppers: Annotated[int, typer.Option(help="Visitors in the simulated day.")] = 200,
    ) -> None:
        """Run the simulated store end to end on the embedded defaults."""
        layout = load_layout(layout_file)
        day = datetime(2026, 11, 28, 7, 0, tzinfo=ZoneInfo(layout.store.timezone))
        run(lambda settings: demo(settings, layout, shoppers, day))
