"""Fairy edits on DaVinci Resolve's current timeline, through its scripting API.

Everything here takes the ``resolve`` object (``DaVinciResolveScript.scriptapp
("Resolve")``, or the ``resolve`` global inside Resolve), so the same code runs
from Workspace > Scripts, from the external command, and in tests against a
fake. Only calls documented in Resolve's scripting README are used:

    ProjectManager.GetCurrentProject, Project.GetCurrentTimeline / GetMediaPool,
    Timeline.GetCurrentVideoItem / GetSelectedClips / GetItemListInTrack /
      GetTrackCount / AddTrack / GetStartFrame / GetSetting / GetMarkInOut / GetName,
    TimelineItem.GetStart / GetEnd / GetDuration / GetLeftOffset / GetRightOffset /
      GetSourceStartFrame / GetName / GetMediaPoolItem / GetTrackTypeAndIndex /
      GetUniqueId / AddMarker / AddTake / GetTakesCount / SelectTakeByIndex / FinalizeTake,
    MediaPoolItem.GetClipProperty("File Path" | "FPS"),
    MediaPool.ImportMedia / AppendToTimeline([{clipInfo}]).

Frames: record frames (GetStart, recordFrame) are timeline frames counted like
GetStartFrame (e.g. 86400 for 01:00:00:00 at 24 fps); source frames
(GetSourceStartFrame, startFrame/endFrame) count from the media's first frame
at the media's own rate. endFrame is passed as the last frame (inclusive).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
from typing import Any, Callable, TextIO

from fairy_proto.v1.clip_metadata import METADATA_KEY, EditRecord
from fairy_proto.v1.clip_metadata import read as read_record

from ..client import FairyClient
from ..errors import ClipError, PluginError, SelectionError
from ..ranges import MediaRange, exact_rate
from ..relink import result_name
from ..requests import EditParams
from ..session import EditItem, EditSession

__all__ = ["ResolveClip", "EditSummary", "MODES", "current_timeline", "choose_items", "clip_of",
           "place_on_track_above", "add_as_take", "edit_timeline", "marker_record"]

MODES = ("current", "selected", "marks")
MARKER_COLOR = "Purple"
_POLL_SECONDS = 0.2


@dataclasses.dataclass(frozen=True)
class ResolveClip:
    """One timeline item to edit, with what the server and the relink need."""

    item: Any                  # the TimelineItem
    key: str                   # its unique id
    label: str                 # "V1 name" for messages
    track_index: int           # 1-based video track
    record_start: int          # timeline frame of its first frame (GetStart)
    duration: int              # timeline frames (GetDuration)
    media: MediaRange


@dataclasses.dataclass
class EditSummary:
    placed: list[tuple[str, Any]] = dataclasses.field(default_factory=list)   # (label, new item or source item)
    failed: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    cancelled: bool = False

    def lines(self) -> list[str]:
        out = [f"placed {label}" for label, _ in self.placed]
        out += [f"skipped {line}" for line in self.skipped]
        out += [f"not edited {line}" for line in self.failed]
        out += [f"warning: {line}" for line in self.warnings]
        return out


def _rate(text: Any, what: str) -> float:
    """Resolve reports rates as strings like "23.976", "29.97" or "25"."""
    match = re.match(r"\s*([0-9]+(?:\.[0-9]+)?)", str(text or ""))
    if not match or float(match.group(1)) <= 0:
        raise ClipError(f"{what} has no usable frame rate ({text!r})")
    return float(match.group(1))


def current_timeline(resolve: Any) -> tuple[Any, Any]:
    """(project, timeline) open in Resolve, or a PluginError saying what to open."""
    if resolve is None:
        raise PluginError("cannot reach DaVinci Resolve (is it running, with external scripting allowed "
                          "in Preferences > System > General?)")
    project = resolve.GetProjectManager().GetCurrentProject()
    if not project:
        raise PluginError("no project is open in DaVinci Resolve")
    timeline = project.GetCurrentTimeline()
    if not timeline:
        raise PluginError("no timeline is open in DaVinci Resolve; open one on the Edit page")
    return project, timeline


def _video_index(item: Any) -> int | None:
    kind, index = item.GetTrackTypeAndIndex()
    return int(index) if kind == "video" else None


def choose_items(timeline: Any, mode: str, *, track: int | None = None) -> list[Any]:
    """The timeline items to edit: the one under the playhead ("current"), the
    selected video items ("selected"), or every item overlapping the timeline's
    mark in/out on ``track`` (default V1) ("marks")."""
    if mode == "current":
        item = timeline.GetCurrentVideoItem()
        if not item:
            raise SelectionError("no video clip under the playhead; move the playhead over a clip")
        return [item]
    if mode == "selected":
        selected = timeline.GetSelectedClips() or []
        items = [i for i in selected if _video_index(i) is not None]
        if not items:
            raise SelectionError("no video clip is selected on the timeline")
        return sorted(items, key=lambda i: (_video_index(i), i.GetStart()))
    if mode == "marks":
        marks = (timeline.GetMarkInOut() or {}).get("video") or {}
        if "in" not in marks or "out" not in marks:
            raise SelectionError("set the timeline's mark in and mark out first (I and O on the Edit page)")
        track = track or 1
        count = timeline.GetTrackCount("video")
        if not 1 <= track <= count:
            raise SelectionError(f"track V{track} does not exist; the timeline has V1 to V{count}")
        origin = timeline.GetStartFrame()
        first, end = origin + int(marks["in"]), origin + int(marks["out"]) + 1  # out is the last marked frame
        items = [i for i in timeline.GetItemListInTrack("video", track) or []
                 if i.GetStart() < end and i.GetEnd() > first]
        if not items:
            raise SelectionError(f"no clip on V{track} between mark in and mark out")
        return items
    raise SelectionError(f"mode must be one of {', '.join(MODES)}, got '{mode}'")


def clip_of(item: Any, timeline_fps: float, *, handles: int = 0) -> ResolveClip:
    """What the server needs about ``item``: its media file and the media frames
    it shows, at the media's own rate, plus up to ``handles`` frames each side
    where the media has them."""
    name = item.GetName()
    index = _video_index(item)
    label = f"V{index} {name}"
    media_item = item.GetMediaPoolItem()
    if not media_item:
        raise ClipError(f"{label} is not a media clip (a title, generator or compound clip)")
    path = media_item.GetClipProperty("File Path")
    if not path:
        raise ClipError(f"{label} has no media file (offline or generated)")
    media_fps = _rate(media_item.GetClipProperty("FPS"), label)
    duration = int(item.GetDuration())
    # Resolve plays other rates at real speed: n timeline frames show n * media/timeline media frames.
    scale = media_fps / timeline_fps
    count = max(1, round(duration * scale))
    start = int(item.GetSourceStartFrame())
    before = min(handles, int(item.GetLeftOffset() * scale), start)
    after = min(handles, int(item.GetRightOffset() * scale))
    media = MediaRange(media_path=str(path), start_frame=start, frame_count=count, rate=exact_rate(media_fps),
                       handles_before=max(0, before), handles_after=max(0, after))
    return ResolveClip(item=item, key=str(item.GetUniqueId()), label=label, track_index=index,
                       record_start=int(item.GetStart()), duration=duration, media=media)


def _import(media_pool: Any, path: pathlib.Path) -> Any:
    imported = media_pool.ImportMedia([str(path)]) or []
    if not imported:
        raise ClipError(f"Resolve could not import {path}")
    return imported[0]


def _rendered(job) -> tuple[int, int]:
    """(handle frames before, frames of the range) in the rendered file."""
    asked = job.request.range
    if job.rendered_range.frame_count > 0:
        return asked.start_frame - job.rendered_range.start_frame, asked.frame_count
    return 0, asked.frame_count


def _marker(item: Any, frame: int, record: EditRecord) -> None:
    """The edit's record on the result: the note for people, metadata["fairy"]'s layout as JSON in the
    marker's custom data for scripts (Resolve keeps no other metadata on a timeline item)."""
    note = f"{record.instruction} (seed {record.seed}, model {record.model or 'default'})"
    item.AddMarker(frame, MARKER_COLOR, f"Fairy: {result_name(record.instruction)}", note, 1,
                   json.dumps(record.to_metadata(), sort_keys=True))


def marker_record(marker: dict) -> EditRecord | None:
    """The record a Fairy marker carries (a value of TimelineItem.GetMarkers()), or None."""
    try:
        data = json.loads(marker.get("customData") or "")
    except ValueError:
        return None
    return read_record({METADATA_KEY: data}) if isinstance(data, dict) else None


def _free_track_above(timeline: Any, clip: ResolveClip) -> int:
    """The first video track above the clip's with nothing over its record range;
    a new track on top when there is none."""
    first, end = clip.record_start, clip.record_start + clip.duration
    count = timeline.GetTrackCount("video")
    for index in range(clip.track_index + 1, count + 1):
        busy = any(i.GetStart() < end and i.GetEnd() > first for i in timeline.GetItemListInTrack("video", index) or [])
        if not busy:
            return index
    if not timeline.AddTrack("video"):
        raise ClipError(f"Resolve could not add a video track for {clip.label}")
    return count + 1


def place_on_track_above(media_pool: Any, timeline: Any, clip: ResolveClip, result_path: pathlib.Path, job,
                         record: EditRecord, warnings: list[str] | None = None) -> Any:
    """Import the result and put it over ``clip`` on the first free track above,
    at the same record frame; a marker on it carries the instruction."""
    media_item = _import(media_pool, result_path)
    before, count = _rendered(job)
    track = _free_track_above(timeline, clip)
    appended = media_pool.AppendToTimeline([{
        "mediaPoolItem": media_item,
        "startFrame": before,
        "endFrame": before + count - 1,
        "mediaType": 1,  # video only
        "trackIndex": track,
        "recordFrame": clip.record_start,
    }]) or []
    if not appended:
        raise ClipError(f"Resolve refused to place the result of {clip.label} on V{track}")
    new = appended[0]
    _marker(new, before, record)
    if warnings is not None and (new.GetStart() != clip.record_start or new.GetDuration() != clip.duration):
        warnings.append(f"{clip.label}: the result landed at {new.GetStart()}+{new.GetDuration()}, "
                        f"not {clip.record_start}+{clip.duration}")
    return new


def add_as_take(media_pool: Any, clip: ResolveClip, result_path: pathlib.Path, job, record: EditRecord, *,
                finalize: bool = False) -> Any:
    """Import the result and add it to ``clip``'s item as a new take, selected;
    the original stays the first take unless ``finalize`` (FinalizeTake) is asked."""
    media_item = _import(media_pool, result_path)
    before, count = _rendered(job)
    item = clip.item
    if not item.AddTake(media_item, before, before + count - 1):
        raise ClipError(f"Resolve refused to add a take to {clip.label}")
    index = item.GetTakesCount()
    if not item.SelectTakeByIndex(index):
        raise ClipError(f"Resolve could not select take {index} of {clip.label}")
    if finalize and not item.FinalizeTake():
        raise ClipError(f"Resolve could not finalize the take of {clip.label}")
    _marker(item, before, record)
    return item


def edit_timeline(resolve: Any, params: EditParams, *, client: FairyClient, media_dir: pathlib.Path,
                  mode: str = "current", track: int | None = None, handles: int = 0, as_take: bool = False,
                  finalize_take: bool = False, stream: TextIO | None = None,
                  should_cancel: Callable[[], bool] | None = None) -> EditSummary:
    """Edit the chosen items of Resolve's current timeline and place the results.

    Blocks until every job ended (Resolve scripts run outside its UI thread);
    progress goes to ``stream``. ``should_cancel()`` true (or Ctrl-C) cancels
    the submitted jobs and places nothing.
    """
    params.check()
    project, timeline = current_timeline(resolve)
    timeline_fps = _rate(timeline.GetSetting("timelineFrameRate"), "the timeline")
    summary = EditSummary()
    clips: list[ResolveClip] = []
    for item in choose_items(timeline, mode, track=track):
        try:
            clips.append(clip_of(item, timeline_fps, handles=handles))
        except ClipError as exc:
            summary.skipped.append(str(exc))
    if not clips:
        return summary
    client.server_info()  # one clear line now if the server is not there
    media_dir.mkdir(parents=True, exist_ok=True)
    by_key = {clip.key: clip for clip in clips}
    media_pool = project.GetMediaPool()

    def place(item: EditItem, update, record: EditRecord) -> Any:
        clip = by_key[item.key]
        if as_take:
            return add_as_take(media_pool, clip, update.result_path, update.job, record, finalize=finalize_take)
        return place_on_track_above(media_pool, timeline, clip, update.result_path, update.job, record,
                                    summary.warnings)

    with EditSession(client, media_dir) as session:
        for clip in clips:
            session.submit(EditItem(key=clip.key, name=str(clip.item.GetName()), media=clip.media, label=clip.label,
                                    labels={"editor": "resolve", "timeline": str(timeline.GetName()),
                                            "clip": clip.label, "item": clip.key}), params)
        result = session.run(place, stream=stream, live=False, should_cancel=should_cancel,
                             poll_seconds=_POLL_SECONDS)
    summary.cancelled = result.cancelled
    for outcome in result.outcomes:
        if outcome.placed is not None:
            summary.placed.append((outcome.item.shown, outcome.placed))
        elif outcome.error and not result.cancelled:
            summary.failed.append(f"{outcome.item.shown}: {outcome.error}")
    return summary
