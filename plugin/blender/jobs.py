"""The Blender session's Fairy jobs: submit spans, follow them, put the results on the timeline.

Threads (the core's EditSession and its JobRunner) talk to the server; :meth:`JobBoard.tick` runs
on Blender's main thread (a ``bpy.app.timers`` callback) and is the only place
that changes Blender data. No ``bpy`` import: the caller passes the scenes and
the undo hook, so tests drive exactly what the timer does.
"""

from __future__ import annotations

import base64
import dataclasses
import fractions
import ipaddress
import json
import pathlib
from typing import Callable, Mapping

from fairy_plugin.client import FairyClient
from fairy_proto.v1 import fairy_pb2
from fairy_plugin.errors import PluginError
from fairy_plugin.requests import EditParams, request_for_range
from fairy_plugin.runner import FINAL_STATES, JobUpdate
from fairy_plugin.session import EditItem, EditSession
from fairy_proto.v1.clip_metadata import EditRecord

from . import placement
from .strips import StripSpan, media_range

__all__ = ["JobRecord", "JobBoard", "EditOptions", "PendingJobs", "check_address_allowed", "strip_metadata"]


@dataclasses.dataclass(frozen=True)
class EditOptions:
    """What the dialog asks, beyond the core's EditParams."""

    params: EditParams
    handles: int = 0             # extra frames rendered each side, where the media has them


@dataclasses.dataclass
class JobRecord:
    """One job as the panel shows it."""

    job_id: str
    scene: str
    span: StripSpan
    options: EditOptions
    state: str = "QUEUED"
    fraction: float = 0.0
    message: str = ""
    model: str = ""
    preview_paths: list[str] = dataclasses.field(default_factory=list)
    result_path: str = ""
    result_strip: str = ""      # the inserted strip's name, once added
    blend_file: str = ""        # the saved .blend that asked for it ("" when unsaved)
    detached: bool = False      # the .blend that asked for it was closed: never insert into another file
    last_update: JobUpdate | None = dataclasses.field(default=None, repr=False)
    edit: EditRecord | None = dataclasses.field(default=None, repr=False)  # metadata["fairy"], once DONE

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def label(self) -> str:
        return f"{self.span.strip_name}: {self.options.params.instruction}"


def check_address_allowed(address: str, online_access: bool) -> None:
    """Blender's "Allow Online Access" off means no connection leaves this computer."""
    if online_access:
        return
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise PluginError(
        f"online access is off in Blender (Preferences > System > Network), so Fairy can only reach a "
        f"server on this computer, not {address}")


def _idprop_int(value: int):
    """Blender's integer properties hold 32 bits; larger values are kept as text."""
    return value if -2**31 <= value < 2**31 else str(value)


def strip_metadata(edit: EditRecord) -> dict:
    """What goes under ``strip["fairy"]`` on a result strip: the one metadata["fairy"] layout
    (fairy_proto.v1.clip_metadata), with a seed too large for Blender's integers as text."""
    metadata = edit.to_metadata()
    metadata["seed"] = _idprop_int(metadata["seed"])
    return metadata


def _rendered_handles(update: JobUpdate, span: StripSpan) -> tuple[int, int]:
    """Frames the server rendered before/after the span (the handles the media had)."""
    rendered = update.job.rendered_range
    if not rendered.frame_count:
        return 0, 0
    before = span.media_start - rendered.start_frame
    after = rendered.start_frame + rendered.frame_count - (span.media_start + span.frame_count)
    return max(0, before), max(0, after)


class PendingJobs:
    """Jobs whose result is not on the timeline yet, per saved .blend, in a JSON file.

    Kept outside the .blend on purpose: undo must not bring finished jobs back, and
    a crash must not lose the running ones. Reopening the file re-attaches them
    (submitting the same job id again is idempotent on the server).
    """

    def __init__(self, path: pathlib.Path):
        self.path = pathlib.Path(path)

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict) -> None:
        from fairy_proto.files import atomic_write

        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Whole or not at all (a crash mid-write must not lose the running jobs); private to the user, as before.
        with atomic_write(self.path, "w", overwrite=True, file_mode=0o600, encoding="utf-8") as handle:
            json.dump(data, handle, indent=1)

    def add(self, record: JobRecord, request: fairy_pb2.SubmitEditRequest) -> None:
        if not record.blend_file:
            return  # an unsaved file cannot be reopened
        span = dataclasses.asdict(record.span)
        span["rate"] = f"{record.span.rate.numerator}/{record.span.rate.denominator}"
        options = dataclasses.asdict(record.options)
        data = self._read()
        data.setdefault(record.blend_file, {})[record.job_id] = {
            "scene": record.scene, "span": span, "options": options,
            "request": base64.b64encode(request.SerializeToString()).decode()}
        self._write(data)

    def remove(self, job_id: str) -> None:
        data = self._read()
        changed = False
        for blend in list(data):
            if data[blend].pop(job_id, None) is not None:
                changed = True
            if not data[blend]:
                del data[blend]
        if changed:
            self._write(data)

    def for_file(self, blend_file: str) -> dict[str, dict]:
        return dict(self._read().get(blend_file, {})) if blend_file else {}


def _record_from_entry(job_id: str, blend_file: str, entry: dict) -> tuple[JobRecord, fairy_pb2.SubmitEditRequest]:
    span = dict(entry["span"])
    span["rate"] = fractions.Fraction(span["rate"])
    options = dict(entry["options"])
    options["params"] = EditParams(**options["params"])
    record = JobRecord(job_id=job_id, scene=entry["scene"], span=StripSpan(**span),
                       options=EditOptions(**options), blend_file=blend_file)
    return record, fairy_pb2.SubmitEditRequest.FromString(base64.b64decode(entry["request"]))


class JobBoard:
    """Every Fairy job of this Blender session.

    ``make_client(address, token)`` opens a client; one EditSession serves each
    (address, token) pair, so changing the server in the preferences never
    orphans running jobs.
    """

    def __init__(self, work_dir: pathlib.Path, *,
                 make_client: Callable[[str, str], FairyClient] | None = None,
                 always_download: bool = False):
        self.work_dir = pathlib.Path(work_dir)
        self._make_client = make_client or (lambda address, token: FairyClient(address, token=token or None))
        self._always_download = always_download
        self._sessions: dict[tuple[str, str], EditSession] = {}
        self._session_of: dict[str, EditSession] = {}
        self.records: dict[str, JobRecord] = {}
        self._batch: list[str] = []  # jobs since the board was last idle: the status bar's total

    @property
    def pending(self) -> PendingJobs:
        return PendingJobs(self.work_dir / "pending.json")

    # -- submitting ---------------------------------------------------------

    def _session(self, address: str, token: str) -> EditSession:
        key = (address, token)
        if key not in self._sessions:
            self._sessions[key] = EditSession(self._make_client(address, token), self.work_dir / "results",
                                              always_download=self._always_download)
        return self._sessions[key]

    def submit(self, scene_name: str, spans: list[StripSpan], options: EditOptions, *,
               address: str, token: str = "", online_access: bool = True,
               blend_file: str = "") -> list[JobRecord]:
        """Queue one job per span; returns at once. Nothing is sent when any input is refused."""
        check_address_allowed(address, online_access)
        requests = []
        for span in spans:
            request = request_for_range(media_range(span), options.params,
                                        labels={"editor": "blender", "scene": scene_name, "strip": span.strip_name})
            requests.append((span, request))
        if not self.busy:
            self._batch = []
        session = self._session(address, token)
        records = []
        for span, request in requests:
            record = JobRecord(job_id=request.job_id, scene=scene_name, span=span, options=options,
                               blend_file=blend_file)
            self.pending.add(record, request)
            self._start(record, request, session)
            records.append(record)
        return records

    def _start(self, record: JobRecord, request: fairy_pb2.SubmitEditRequest, session: EditSession) -> None:
        self.records[record.job_id] = record
        self._session_of[record.job_id] = session
        self._batch.append(record.job_id)
        item = EditItem(key=record.span.strip_name, name=record.span.strip_name, media=media_range(record.span))
        session.resume(item, request)

    def reattach(self, blend_file: str, scenes: Mapping, *, address: str, token: str = "",
                 online_access: bool = True, undo_push: Callable[[str], None] | None = None) -> list[JobRecord]:
        """``blend_file`` was just opened: follow its jobs again, from this session (detached
        when it was closed) or an earlier one (watched again through the current server)."""
        records = []
        for job_id, entry in self.pending.for_file(blend_file).items():
            record = self.records.get(job_id)
            if record is not None:
                record.detached = False
                if record.state == "DONE" and not record.result_strip and record.last_update is not None:
                    record.message = ""
                    self._insert(record, record.last_update, scenes, undo_push)
                if record.final:
                    self.pending.remove(job_id)
            else:
                check_address_allowed(address, online_access)
                try:
                    record, request = _record_from_entry(job_id, blend_file, entry)
                except (KeyError, TypeError, ValueError):
                    self.pending.remove(job_id)  # written by an incompatible version: drop it
                    continue
                if not self.busy:
                    self._batch = []
                self._start(record, request, self._session(address, token))
            records.append(record)
        return records

    def cancel(self, job_id: str) -> None:
        record = self.records.get(job_id)
        if record is None or record.final:
            return
        self._session_of[job_id].cancel(job_id)

    def cancel_all(self) -> None:
        for job_id, record in list(self.records.items()):
            if not record.final:
                self.cancel(job_id)

    def detach_all(self) -> None:
        """Another .blend is being opened: its scenes may share names with this one's, so
        no pending result may land there (each stays on disk and is named in the panel)."""
        for record in self.records.values():
            if not record.final:
                record.detached = True

    def clear_finished(self) -> None:
        for job_id in [j for j, r in self.records.items() if r.final]:
            del self.records[job_id]
            self.pending.remove(job_id)  # dismissed: not brought back when its file is reopened
            self._session_of.pop(job_id, None)
        self._batch = [j for j in self._batch if j in self.records]

    # -- the main thread ----------------------------------------------------

    def tick(self, scenes: Mapping, *, undo_push: Callable[[str], None] | None = None) -> list[JobRecord]:
        """Take every update since the last call and apply it: progress, previews, and
        each finished clip as a new strip (one undo step each). Returns the records that changed."""
        changed: dict[str, JobRecord] = {}
        for session in list(self._sessions.values()):
            for outcome in session.poll():
                record = self.records.get(outcome.job_id)
                if record is None:
                    continue  # cleared from the panel meanwhile
                self._apply(record, outcome.update, outcome.record)
                changed[record.job_id] = record

            def place(item: EditItem, update: JobUpdate, edit: EditRecord):
                record = self.records.get(update.job_id)
                return None if record is None else self._insert(record, update, scenes, undo_push)

            for outcome in session.place_finished(place):
                record = self.records.get(outcome.job_id)
                if record is not None:
                    self._settle(record)
                    changed[record.job_id] = record
        return list(changed.values())

    def _apply(self, record: JobRecord, update: JobUpdate, edit: EditRecord | None) -> None:
        """Progress, previews and the result's path; a DONE result is placed by ``place_finished`` next."""
        if record.final:
            return  # a late duplicate of a final state
        record.last_update = update
        record.edit = edit or record.edit
        record.state, record.fraction = update.state, update.fraction
        record.model = update.job.model or record.model
        if update.message:
            record.message = update.message
        if update.previews and not record.preview_paths:
            record.preview_paths = self._save_previews(record.job_id, update.previews)
        if update.state == "DONE" and update.result_path is not None:
            record.result_path = str(update.result_path)
        elif record.final:
            self._settle(record)

    def _settle(self, record: JobRecord) -> None:
        if record.final and not (record.detached and record.state == "DONE"):
            self.pending.remove(record.job_id)  # on the timeline, failed or cancelled: nothing to come back to

    def insert_again(self, job_id: str, scenes: Mapping, *,
                     undo_push: Callable[[str], None] | None = None) -> JobRecord:
        """Put a finished job's clip on the timeline on request: after it was undone, or when
        its .blend was closed meanwhile and is open again (the user's explicit choice)."""
        record = self.records.get(job_id)
        if record is None or record.state != "DONE" or record.last_update is None or not record.result_path:
            raise PluginError(f"job {job_id} has no finished result to add")
        record.detached = False
        record.message = ""
        self._insert(record, record.last_update, scenes, undo_push)
        if record.message:
            raise PluginError(record.message)
        self.pending.remove(job_id)
        return record

    def _save_previews(self, job_id: str, jpegs: list[bytes]) -> list[str]:
        folder = self.work_dir / "previews"
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, data in enumerate(jpegs):
            path = folder / f"{job_id}-{i}.jpg"
            path.write_bytes(data)
            paths.append(str(path))
        return paths

    def _insert(self, record: JobRecord, update: JobUpdate, scenes: Mapping,
                undo_push: Callable[[str], None] | None):
        """The new strip, or None with ``record.message`` saying why there is none."""
        if record.detached:
            record.message = f"its .blend file was closed; the result is at {record.result_path}"
            return None
        scene = scenes.get(record.scene)
        if scene is None or scene.sequence_editor is None:
            record.message = f"scene '{record.scene}' is gone; the result is at {record.result_path}"
            return None
        before, after = _rendered_handles(update, record.span)
        try:
            strip = placement.insert_result(
                scene.sequence_editor, record.span, record.result_path,
                name=placement.strip_name_for(record.options.params.instruction),
                metadata=strip_metadata(record.edit), rendered_before=before, rendered_after=after)
        except PluginError as exc:
            record.message = f"not added: {exc}"
            return None
        record.result_strip = strip.name
        if undo_push is not None:
            undo_push(f"Fairy: {strip.name}")
        return strip

    # -- for the panel and status bar ---------------------------------------

    @property
    def busy(self) -> bool:
        return any(not r.final for r in self.records.values())

    def overall(self) -> tuple[float, int, int]:
        """(fraction done, jobs left, jobs in the batch) over the jobs since the board was last idle."""
        batch = [self.records[j] for j in self._batch if j in self.records]
        if not batch:
            return 1.0, 0, 0
        done = sum(1.0 if r.final else r.fraction for r in batch)
        return done / len(batch), sum(not r.final for r in batch), len(batch)

    def close(self) -> None:
        """Stop watching (the server keeps running the jobs)."""
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()
