"""The one job loop every editor front end uses: submit, watch, cancel, download, place.

`fairy timeline`, the Resolve script and the Blender extension each only say which clips (an
:class:`EditItem` per clip: its media range and a name) and how to place a finished result (a ``place``
callable); everything between is here. The threads that talk to the server are the :class:`JobRunner`'s;
nothing here blocks for long except :meth:`EditSession.run`, the blocking loop of the command-line front
ends. Blender calls :meth:`EditSession.poll` and :meth:`EditSession.place_finished` from its timer instead.
"""

from __future__ import annotations

import dataclasses
import pathlib
import threading
from collections.abc import Callable
from typing import Any, TextIO

from fairy_proto.v1 import fairy_pb2
from fairy_proto.v1.clip_metadata import EditRecord

from .client import FairyClient
from .errors import ClipError, PluginError
from .progress import ProgressBoard
from .ranges import MediaRange
from .records import edit_record
from .requests import EditParams, request_for_range
from .runner import JobRunner, JobUpdate

__all__ = ["EditItem", "Outcome", "BatchResult", "EditSession", "Place"]


@dataclasses.dataclass(frozen=True)
class EditItem:
    """One clip to edit, as the host knows it."""

    key: str  # the host's id for the clip (strip name, item id, "V1 Clip-002"): unique in a session
    name: str  # the clip's own name, recorded in metadata["fairy"]["source"]["name"]
    media: MediaRange
    labels: dict[str, str] = dataclasses.field(default_factory=dict)  # request labels (editor, timeline...)
    label: str = ""  # how the user knows it in progress and messages ("V1 Clip-002"); default: the key

    @property
    def shown(self) -> str:
        return self.label or self.key


@dataclasses.dataclass
class Outcome:
    """What became of one item's job."""

    item: EditItem
    job_id: str
    update: JobUpdate | None = None
    record: EditRecord | None = None  # set once DONE
    placed: Any = None  # what ``place`` returned
    error: str = ""  # why it was not placed: the job failed or was cancelled, or placing refused

    @property
    def final(self) -> bool:
        return self.update is not None and self.update.final

    @property
    def done(self) -> bool:
        return self.update is not None and self.update.state == "DONE"


# place(item, update, record) puts a DONE job's result on the host's timeline and returns what it made;
# it raises ClipError (or any PluginError) when it cannot, and the outcome records the message.
Place = Callable[[EditItem, JobUpdate, EditRecord], Any]


@dataclasses.dataclass
class BatchResult:
    outcomes: list[Outcome]
    cancelled: bool = False

    @property
    def placed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.placed is not None]

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error]


class EditSession:
    """The jobs one front end started on one server (``client``).

    Rendered clips are fetched into ``media_dir`` (``always_download``), or used where the server wrote
    them when this machine can read them; each DONE job's result is placed once, in submission order.
    """

    def __init__(self, client: FairyClient, media_dir: pathlib.Path, *, always_download: bool = True):
        self.client = client
        self.media_dir = pathlib.Path(media_dir)
        self._runner = JobRunner(client, self.media_dir, always_download=always_download)
        self._outcomes: dict[str, Outcome] = {}  # job id -> outcome, in submission order
        self._uploads: dict[str, str] = {}  # media path -> upload id

    @property
    def outcomes(self) -> list[Outcome]:
        return list(self._outcomes.values())

    def outcome(self, job_id: str) -> Outcome:
        return self._outcomes[job_id]

    @property
    def all_final(self) -> bool:
        return all(o.final for o in self._outcomes.values())

    # -- submitting -----------------------------------------------------------

    def upload(self, media_path: str) -> str:
        """Send a media file to the server once per session (for a server on another machine)."""
        if media_path not in self._uploads:
            self._uploads[media_path] = self.client.upload(pathlib.Path(media_path))
        return self._uploads[media_path]

    def submit(self, item: EditItem, params: EditParams, *, upload: bool = False) -> str:
        """Start ``item``'s job; returns its id at once (errors arrive as a FAILED update)."""
        upload_id = self.upload(item.media.media_path) if upload else None
        request = request_for_range(item.media, params, labels=item.labels, upload_id=upload_id)
        return self.resume(item, request)

    def resume(self, item: EditItem, request: fairy_pb2.SubmitEditRequest) -> str:
        """Follow (or start) the job of a request made earlier; resubmitting a job id is idempotent."""
        job_id = self._runner.submit(item.shown, request)  # names the downloaded file after the clip
        self._outcomes[job_id] = Outcome(item=item, job_id=job_id)
        return job_id

    # -- following --------------------------------------------------------------

    def poll(self) -> list[Outcome]:
        """Take every update since the last call (non-blocking); returns the outcomes that changed."""
        changed: dict[str, Outcome] = {}
        for update in self._runner.drain():
            outcome = self._outcomes.get(update.job_id)
            if outcome is None or outcome.final:
                continue  # not ours, or a late duplicate of a final state
            outcome.update = update
            if update.state == "DONE":
                outcome.record = edit_record(update.job, source_name=outcome.item.name,
                                             source_media=outcome.item.media.media_path, server=self.client.address)
            elif update.final:
                outcome.error = update.state.lower() + (f": {update.message}" if update.message else "")
            changed[update.job_id] = outcome
        return list(changed.values())

    def place_finished(self, place: Place) -> list[Outcome]:
        """Place every DONE result not placed yet, in submission order; returns those tried."""
        tried = []
        for outcome in self._outcomes.values():
            if not outcome.done or outcome.placed is not None or outcome.error:
                continue
            try:
                outcome.placed = place(outcome.item, outcome.update, outcome.record)
                if outcome.placed is None:
                    outcome.error = "not placed"
            except (ClipError, PluginError) as exc:
                outcome.error = str(exc)
            tried.append(outcome)
        return tried

    def cancel(self, job_id: str, *, wait: bool = False) -> None:
        self._runner.cancel(job_id, wait=wait)

    def cancel_all(self, *, wait: bool = False) -> None:
        self._runner.cancel_all(wait=wait)

    def run(self, place: Place, *, stream: TextIO | None = None, live: bool | None = None,
            interrupted: threading.Event | None = None, should_cancel: Callable[[], bool] | None = None,
            poll_seconds: float = 0.1) -> BatchResult:
        """Block until every job ended, drawing progress on ``stream``, then place the results in submission
        order. ``interrupted`` set, ``should_cancel()`` true or Ctrl-C cancels every job still running,
        waits for the server to confirm, and places nothing."""
        interrupted = interrupted or threading.Event()
        board = ProgressBoard({job_id: o.item.shown for job_id, o in self._outcomes.items()}, stream=stream, live=live)
        try:
            while True:
                board.update([o.update for o in self.poll()])
                if self.all_final:
                    break
                if should_cancel is not None and should_cancel():
                    interrupted.set()
                if interrupted.wait(poll_seconds):
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            self.cancel_all(wait=True)
            self._runner.wait_all(timeout=10)
            self.poll()
            return BatchResult(self.outcomes, cancelled=True)
        self.place_finished(place)
        return BatchResult(self.outcomes)

    def close(self) -> None:
        """Stop watching (jobs keep running on the server)."""
        self._runner.close()

    def __enter__(self) -> "EditSession":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
