"""Put finished edits back into an OTIO timeline without touching what was there.

Two ways, both leaving the source clip's media, range and place as they were:

* :func:`place_on_track_above`: a new clip on a video track above the source
  clip's track, over exactly the source clip's timeline range. Results go on
  tracks this module creates (marked ``metadata["fairy"]["result_track"]``),
  inserted right above the source's track and reused while they are free at
  that range, so every original track serializes exactly as before.
* :func:`add_as_media_reference`: the result as a second media reference of the
  source clip, made active, for editors that prefer versions to tracks.
"""

from __future__ import annotations

import fractions

import opentimelineio as otio
from fairy_proto.v1 import fairy_pb2
from fairy_proto.v1.clip_metadata import METADATA_KEY, EditRecord
from fairy_proto.v1.clip_metadata import read as read_record
from opentimelineio.opentime import RationalTime, TimeRange

from .errors import ClipError
from .records import edit_record
from .ranges import clip_timeline_range, clip_used_frames, media_path, otio_rate, path_to_url, top_level_track

__all__ = ["place_on_track_above", "add_as_media_reference", "replace_result", "is_result_track", "result_name",
           "edited_items", "activate_original_media"]

_NAME_LENGTH = 60


def _rate(job: fairy_pb2.Job) -> fractions.Fraction:
    rate = job.request.range.rate
    if rate.num <= 0 or rate.den <= 0:
        raise ClipError(f"job {job.job_id} has no frame rate in its request")
    return fractions.Fraction(rate.num, rate.den)


def _rendered(job: fairy_pb2.Job) -> tuple[int, int]:
    """(handle frames before the range, frames in the file): what the server
    actually rendered, which is the range plus the handles the media had."""
    asked = job.request.range
    rendered = job.rendered_range
    if rendered.frame_count <= 0:
        return 0, asked.frame_count
    return asked.start_frame - rendered.start_frame, rendered.frame_count


def _record_metadata(job: fairy_pb2.Job, source_clip: otio.schema.Clip, record: EditRecord | None) -> dict:
    """``metadata["fairy"]``: the one layout of fairy_proto.v1.clip_metadata."""
    if record is None:
        try:
            media = media_path(source_clip.media_reference, clip_name=source_clip.name)
        except ClipError:
            media = job.request.source.path or job.request.source.upload_id
        record = edit_record(job, source_name=source_clip.name, source_media=media, server="")
    return record.to_metadata()


def result_name(instruction: str) -> str:
    """A clip or strip name after the instruction, short enough for a timeline."""
    text = " ".join(instruction.split())
    return text if len(text) <= _NAME_LENGTH else text[:_NAME_LENGTH - 1] + "…"


def _check_job_matches(source_clip: otio.schema.Clip, job: fairy_pb2.Job) -> None:
    start, count, rate, _ = clip_used_frames(source_clip)
    asked = job.request.range
    if (asked.start_frame, asked.frame_count) != (start, count) or _rate(job) != rate:
        raise ClipError(
            f"job {job.job_id} rendered frames {asked.start_frame}+{asked.frame_count} but clip "
            f"'{source_clip.name}' now shows {start}+{count}; the timeline changed since it was submitted")


def _result_reference(result_path: str, job: fairy_pb2.Job, first_frame: RationalTime | None) -> otio.schema.ExternalReference:
    rate = otio_rate(_rate(job))
    _, frames = _rendered(job)
    start = first_frame if first_frame is not None else RationalTime(0, rate)
    return otio.schema.ExternalReference(
        target_url=path_to_url(result_path),
        available_range=TimeRange(start.rescaled_to(rate), RationalTime(frames, rate)),
        metadata={"fairy": {"job_id": job.job_id}},
    )


def is_result_track(item) -> bool:
    return (isinstance(item, otio.schema.Track) and item.kind == otio.schema.TrackKind.Video
            and bool(dict(item.metadata.get("fairy", {})).get("result_track")))


def _overlaps(a: TimeRange, b: TimeRange) -> bool:
    # Strict: touching ends do not overlap. Compared in seconds, with a hair of
    # tolerance, because mixed-rate sums are not exact in floating point.
    eps = 1e-9
    return (a.start_time.to_seconds() < b.end_time_exclusive().to_seconds() - eps
            and b.start_time.to_seconds() < a.end_time_exclusive().to_seconds() - eps)


def _free(track: otio.schema.Track, where: TimeRange) -> bool:
    return not any(_overlaps(track.range_of_child_at_index(i), where)
                   for i, child in enumerate(track) if not isinstance(child, otio.schema.Gap))


def _put(track: otio.schema.Track, clip: otio.schema.Clip, where: TimeRange) -> None:
    """Rebuild a result track's gaps so ``clip`` starts at ``where``. Only for
    tracks this module made: they hold nothing but result clips and gaps."""
    placed = [(track.range_of_child_at_index(i).start_time, child)
              for i, child in enumerate(track) if not isinstance(child, otio.schema.Gap)]
    placed.append((where.start_time, clip))
    placed.sort(key=lambda entry: entry[0].to_seconds())
    track.clear()
    cursor = RationalTime(0, where.start_time.rate)
    for start, child in placed:
        gap = start - cursor
        if gap.to_seconds() > 1e-9:
            track.append(otio.schema.Gap(source_range=TimeRange(RationalTime(0, gap.rate), gap)))
        track.append(child)
        cursor = start + child.duration()


def _new_result_track(timeline: otio.schema.Timeline, index: int, source_track: otio.schema.Track) -> otio.schema.Track:
    count = sum(1 for t in timeline.tracks if is_result_track(t))
    track = otio.schema.Track(name=f"Fairy {count + 1}", kind=otio.schema.TrackKind.Video,
                              metadata={"fairy": {"result_track": True, "source_track": source_track.name}})
    timeline.tracks.insert(index, track)
    return track


def place_on_track_above(timeline: otio.schema.Timeline, source_clip: otio.schema.Clip, result_path: str,
                         job: fairy_pb2.Job, record: EditRecord | None = None, *,
                         name: str | None = None) -> otio.schema.Clip:
    """Add the result of ``job`` as a new clip over exactly ``source_clip``'s
    timeline range, on the first free result track directly above the source's
    top-level track (a new one is inserted there when none is free). Returns the
    new clip; the source clip and every other track are left as they were."""
    source_track = top_level_track(source_clip)
    if source_track.kind != otio.schema.TrackKind.Video:
        raise ClipError(f"clip '{source_clip.name}' is on a {source_track.kind} track; only video clips are edited")
    if source_track.parent() is not timeline.tracks:
        raise ClipError(f"clip '{source_clip.name}' is not in this timeline")
    _check_job_matches(source_clip, job)
    where = clip_timeline_range(source_clip)
    rate = otio_rate(_rate(job))
    before, _ = _rendered(job)
    clip = otio.schema.Clip(
        name=name or result_name(job.request.instruction),
        media_reference=_result_reference(result_path, job, None),
        # The duration is the source's seen duration, rescaled rather than
        # re-counted, so the clip covers exactly the same span of the timeline.
        source_range=TimeRange(RationalTime(before, rate), where.duration.rescaled_to(rate)),
        metadata={METADATA_KEY: _record_metadata(job, source_clip, record)},
    )
    tracks = timeline.tracks
    index = tracks.index(source_track) + 1
    while index < len(tracks) and is_result_track(tracks[index]):
        if _free(tracks[index], where):
            _put(tracks[index], clip, where)
            return clip
        index += 1
    _put(_new_result_track(timeline, index, source_track), clip, where)
    return clip


def _first_media_time(clip: otio.schema.Clip) -> RationalTime | None:
    # Read in its own frame on purpose: with opentimelineio 0.18.1, a wrapper
    # from ``clip.media_reference`` still alive across ``set_media_references``
    # makes a later ``media_references()`` crash the interpreter.
    reference = clip.media_reference
    available = reference.available_range if reference is not None else None
    return available.start_time if available is not None else None


def add_as_media_reference(source_clip: otio.schema.Clip, result_path: str, job: fairy_pb2.Job,
                           record: EditRecord | None = None, *, key: str = "fairy", make_active: bool = True) -> str:
    """Add the result as another media reference of ``source_clip`` (under
    ``key``, or ``key-2``, ``key-3``... when taken) and make it active.

    The new reference's available range is placed in the original media's
    time, so the clip's source range selects the same frames in either
    version. Returns the key used.

    With opentimelineio 0.18.1, do not hold an object from
    ``source_clip.media_reference`` across this call: OTIO then crashes on the
    clip's next ``media_references()``.
    """
    _check_job_matches(source_clip, job)
    first = _first_media_time(source_clip)
    references = dict(source_clip.media_references())
    rate = otio_rate(_rate(job))
    before, _ = _rendered(job)
    # The result file's frame 0 is the original's frame (start_frame - handles before).
    offset = RationalTime(job.request.range.start_frame - before, rate)
    start = offset if first is None else first.rescaled_to(rate) + offset
    reference = _result_reference(result_path, job, start)
    reference.metadata[METADATA_KEY] = _record_metadata(job, source_clip, record)
    unique, n = key, 1
    while unique in references:
        n += 1
        unique = f"{key}-{n}"
    references[unique] = reference
    active = unique if make_active else source_clip.active_media_reference_key
    source_clip.set_media_references(references, active)
    return unique


def replace_result(result_clip: otio.schema.Clip, result_path: str, job: fairy_pb2.Job, record: EditRecord) -> otio.schema.Clip:
    """Point a result clip (one ``place_on_track_above`` made) at a new render of the same source range:
    its place and duration on the timeline stay, its media and ``metadata["fairy"]`` are the new ones."""
    old = read_record(result_clip.metadata)
    if old is None:
        raise ClipError(f"clip '{result_clip.name}' is not a Fairy result")
    asked = job.request.range
    if (asked.start_frame, asked.frame_count) != (old.source.start_frame, old.source.frame_count):
        raise ClipError(f"job {job.job_id} rendered frames {asked.start_frame}+{asked.frame_count}, not the "
                        f"{old.source.start_frame}+{old.source.frame_count} of '{result_clip.name}'")
    rate = otio_rate(_rate(job))
    before, _ = _rendered(job)
    duration = result_clip.source_range.duration
    result_clip.media_reference = _result_reference(result_path, job, None)
    result_clip.source_range = TimeRange(RationalTime(before, rate), duration)
    result_clip.metadata[METADATA_KEY] = record.to_metadata()
    result_clip.name = result_name(record.instruction)
    return result_clip


def activate_original_media(clip: otio.schema.Clip) -> str:
    """Make the clip's original media (the first reference that is not a Fairy result) active again, so a
    new version can be added over the same frames; returns its key."""
    keys = _original_media_keys(clip)
    if not keys:
        raise ClipError(f"clip '{clip.name}' has no original media reference, only Fairy results")
    clip.active_media_reference_key = keys[0]
    return keys[0]


def _original_media_keys(clip: otio.schema.Clip) -> list[str]:
    # In a frame of its own: no wrapper from media_references() may outlive it (see add_as_media_reference).
    return [key for key, reference in clip.media_references().items() if read_record(reference.metadata) is None]


def edited_items(timeline: otio.schema.Timeline) -> list[tuple[otio.schema.Clip, str, EditRecord]]:
    """Every edit recorded in ``timeline``: (clip, how it holds the result, record), where ``how`` is
    "clip" for a result clip on a result track and "version" for a clip whose active media reference is a
    result. A record that does not follow the layout raises ClipError naming the clip."""
    found = []
    for clip in timeline.find_clips():
        try:
            record = read_record(clip.metadata)
            if record is not None:
                found.append((clip, "clip", record))
                continue
            key = clip.active_media_reference_key
            references = clip.media_references()
            record = read_record(references[key].metadata) if key in references else None
        except ValueError as exc:
            raise ClipError(f"clip '{clip.name}': {exc}") from None
        if record is not None:
            found.append((clip, "version", record))
    return found
