"""``aisle members`` (enrol, list, revoke) and ``aisle faces`` (the entrance camera's
face match into the log)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import cv2
import typer
from rich.markup import escape

from adapters.cli import CommandError, err, out, outbox_to_log, start_of, stop_on_signals
from adapters.entrance import EntranceAdapter
from adapters.face_match import DEFAULT_THRESHOLD, FaceMatcher, MatchSettings
from adapters.faces import FaceDetector, FaceFinder, FacesUnavailable
from adapters.members import ENTRY, MembersError, MemberStore
from adapters.pipeline import run_adapter
from adapters.sources import MAX_IMAGE_BYTES, SourceError, source_for_camera
from core.cli import run
from core.config import Settings
from core.layout import LayoutError, load_layout
from core.outbox import OutboxError

STORE_HELP = "The enrolment store (default: AISLE_DATA_DIR/members.db; its key beside it)."


def _store(path: Path | None, create: bool = False) -> MemberStore:
    return MemberStore(path or Settings.from_env().data_dir / "members.db", create=create)


def _fail(exc: Exception) -> typer.Exit:
    err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
    return typer.Exit(2)


def _photo_face(finder: FaceFinder, photo: Path) -> object:
    if not photo.is_file():
        raise MembersError(f"--photo {photo}: no such file")
    if photo.stat().st_size > MAX_IMAGE_BYTES:
        raise MembersError(f"--photo {photo}: larger than {MAX_IMAGE_BYTES:,} bytes")
    try:
        image = cv2.imread(str(photo))
    except cv2.error as exc:  # a header that claims more pixels than OpenCV reads
        raise MembersError(f"--photo {photo}: not an image OpenCV reads ({exc.err})") from None
    if image is None:
        raise MembersError(f"--photo {photo}: not an image OpenCV can read")
    faces = finder.find(image)
    if len(faces) != 1:
        raise MembersError(
            f"--photo {photo}: {len(faces)} faces found; a photo of the member alone is needed"
        )
    return faces[0].descriptor


def register(app: typer.Typer) -> None:
    members = typer.Typer(help="Members enrolled for the face match at the entrance.")
    app.add_typer(members, name="members")

    @members.command("enrol")
    def enrol(
        photo: Annotated[
            list[Path], typer.Option("--photo", help="A photo of the member alone (repeat).")
        ],
        consent: Annotated[
            str | None,
            typer.Option("--consent", help="The consent record: the signed form's reference."),
        ] = None,
        purpose: Annotated[
            list[str] | None,
            typer.Option("--purpose", help=f"What the member consented to (default {ENTRY})."),
        ] = None,
        watchlist: Annotated[
            bool,
            typer.Option(
                "--watchlist", help="The store's watch list, not a member (needs --reason)."
            ),
        ] = False,
        reason: Annotated[
            str | None, typer.Option("--reason", help="Why a face is on the watch list.")
        ] = None,
        store_path: Annotated[Path | None, typer.Option("--store", help=STORE_HELP)] = None,
    ) -> None:
        """Enrol a member from photos, with their consent; prints the pseudonymous id. The
        photos are read, described and forgotten: only sealed templates are kept."""
        try:
            if watchlist == (consent is not None) or (watchlist and not reason):
                raise MembersError(
                    "a member needs --consent; a watch-list entry needs --watchlist --reason"
                )
            finder = FaceFinder()
            descriptors = [_photo_face(finder, p) for p in photo]
            member = _store(store_path, create=True).enrol(
                descriptors,  # type: ignore[arg-type]
                consent=reason if watchlist else consent,  # type: ignore[arg-type]
                purposes=tuple(purpose or (ENTRY,)),
                watchlist=watchlist,
            )
        except (MembersError, FacesUnavailable) as exc:
            raise _fail(exc) from None
        out.print(member)

    @members.command("list")
    def list_members(
        store_path: Annotated[Path | None, typer.Option("--store", help=STORE_HELP)] = None,
    ) -> None:
        """Every enrolment: id, kind, purposes, consent, when, revoked when."""
        try:
            rows = _store(store_path).members()
        except MembersError as exc:
            raise _fail(exc) from None
        for m in rows:
            revoked = f"revoked {m.revoked_at:%Y-%m-%d %H:%M}" if m.revoked_at else "active"
            out.print(
                f"{m.id}  {m.kind:<9}  {','.join(m.purposes)}  {escape(m.consent)}  "
                f"enrolled {m.enrolled_at:%Y-%m-%d %H:%M}  {revoked}  {m.templates} templates",
                highlight=False,
            )

    @members.command("revoke")
    def revoke(
        member: Annotated[str, typer.Argument(help="The member's id (m-... or w-...).")],
        store_path: Annotated[Path | None, typer.Option("--store", help=STORE_HELP)] = None,
    ) -> None:
        """Withdraw consent: the member's templates are deleted for good."""
        try:
            m = _store(store_path).revoke(member)
        except MembersError as exc:
            raise _fail(exc) from None
        out.print(f"{m.id}: templates deleted, consent revoked {m.revoked_at:%Y-%m-%d %H:%M:%S}")

    @app.command("faces")
    def faces(
        layout_file: Annotated[Path, typer.Option("--layout", help="Store layout file.")],
        camera: Annotated[str, typer.Option("--camera", help="The entrance camera.")],
        source: Annotated[
            str,
            typer.Option(
                "--source", help="A video file, a folder of images, a camera index or a stream URL."
            ),
        ],
        start: Annotated[
            str | None,
            typer.Option("--start", help="When a file's first frame was taken (ISO)."),
        ] = None,
        threshold: Annotated[
            float,
            typer.Option("--threshold", help="The largest descriptor distance that matches."),
        ] = DEFAULT_THRESHOLD,
        watchlist: Annotated[
            bool,
            typer.Option("--watchlist", help="Match the watch list too (its alerts ask a person)."),
        ] = False,
        detector: Annotated[
            FaceDetector, typer.Option("--detector", help="What finds faces.")
        ] = FaceDetector.DLIB,
        store_path: Annotated[Path | None, typer.Option("--store", help=STORE_HELP)] = None,
    ) -> None:
        """Match the faces an entrance camera sees against the enrolled members and publish
        ``face.matched`` (member id and confidence only) once per visit. Faces that match
        no one leave nothing behind."""
        try:
            layout = load_layout(layout_file)
            cam = layout.camera(camera)
            settings = MatchSettings(threshold=threshold)
            enrolled = _store(store_path).templates(ENTRY, watchlist=watchlist)
            finder = FaceFinder(detector)
            at, why = start_of(source, start, layout.store.timezone)
            frames = source_for_camera(cam, source, start=at, calibrated=False)
            if not frames.live and why != "--start":
                err.print(
                    f"note: the first frame is taken at {at.isoformat()} ({why}); give "
                    "--start, or the events land at that time",
                    soft_wrap=True,
                    highlight=False,
                )
        except (LayoutError, KeyError, ValueError, MembersError, FacesUnavailable) as exc:
            raise _fail(exc) from None
        except (SourceError, CommandError) as exc:
            raise _fail(exc) from None
        adapter = EntranceAdapter(
            camera, frames, finder, FaceMatcher(layout.store.id, camera, enrolled, settings)
        )
        began = time.monotonic()

        async def go(s: Settings) -> None:
            path = s.outboxes / f"{layout.store.id}.{camera}.faces.sqlite"
            async with outbox_to_log(s, path, s.outbox) as box:
                with stop_on_signals(adapter):
                    await run_adapter(adapter, box)

        try:
            run(go)
        except (CommandError, SourceError, OutboxError) as exc:
            raise _fail(exc) from None
        finally:
            adapter.release()
        p = adapter.progress
        out.print(
            f"{camera}: {p.frames[camera]:,} frames in {time.monotonic() - began:.1f} s; "
            f"{len(enrolled)} templates; {p.events['face.matched']:,} face.matched "
            f"({p.new:,} new)",
            highlight=False,
        )
