"""`fairy timeline`: edit clips of any OTIO-readable timeline through a Fairy server.

    fairy timeline edit IN.otio -i "make it snowy" -o OUT.otio [--track V1|NAME]
        [--range START-END] [--clip NAME ...] [--server ADDR] [--token TOKEN]
        [--seed N --steps N --anchors N --model ID --handles N] [--as-version] [--overwrite]
    fairy timeline clips IN.otio      # what could be chosen: tracks, clips, ranges, media
    fairy timeline info IN.otio       # what was done to each Fairy result (its metadata["fairy"])
    fairy timeline redo IN.otio -o OUT.otio [--clip NAME] [--seed N ...]   # render results again

Every chosen clip becomes one server job; the results are fetched next to the
output timeline and relinked (a track above each source track, or with
--as-version another media reference of the clip). Clips that cannot be edited
(no media, a speed effect) are reported and stay in the output unchanged.
The input is never modified; the output is written atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import pathlib
import signal
import sys
import threading
from typing import TextIO

import opentimelineio as otio
from fairy_proto.v1.settings import REQUEST_SETTINGS, add_arguments, values_from_arguments
from opentimelineio.opentime import RationalTime, TimeRange

from .client import DEFAULT_ADDRESS, FairyClient
from .errors import ClipError, OutputExistsError, PluginError, SelectionError
from .ranges import MediaRange, clip_media_range, clip_timeline_range, format_rate, parse_range, timeline_rate
from .records import params_from_record
from .relink import (activate_original_media, add_as_media_reference, edited_items, is_result_track,
                     place_on_track_above, replace_result)
from .requests import EditParams
from .session import EditItem, EditSession

__all__ = ["main", "read_timeline", "write_timeline", "choose_clips", "Chosen"]

_POLL_SECONDS = 0.1
REQUEST_SETTING_NAMES = tuple(s.name for s in REQUEST_SETTINGS)
EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclasses.dataclass
class Chosen:
    clip: otio.schema.Clip
    track_number: int          # 1-based among the timeline's top-level video tracks (V1, V2...)
    label: str                 # how the user knows it: "V1 Clip-002"


# -- reading and writing ---------------------------------------------------------


def read_timeline(path: pathlib.Path) -> otio.schema.Timeline:
    if not path.is_file():
        raise PluginError(f"timeline {path} does not exist")
    try:
        result = otio.adapters.read_from_file(str(path))
    except Exception as exc:  # adapters raise anything; the user needs one line
        raise PluginError(f"cannot read timeline {path}: {' '.join(str(exc).split())}") from None
    if isinstance(result, otio.schema.Timeline):
        return result
    timelines = [t for t in getattr(result, "find_children", lambda **_: [])(descended_from_type=otio.schema.Timeline)]
    if len(timelines) == 1:
        return timelines[0]
    raise PluginError(f"{path} holds {len(timelines)} timelines; export the one to edit on its own")


def _check_output(out: pathlib.Path, inp: pathlib.Path, overwrite: bool) -> None:
    """Refuse a bad output before any job runs."""
    if out.resolve() == inp.resolve():
        raise OutputExistsError(f"output {out} is the input timeline; originals are never overwritten")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"output {out} exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise PluginError(f"output folder {out.parent} does not exist")
    try:
        adapter = otio.adapters.from_filepath(str(out))
    except Exception:
        raise PluginError(f"no installed OTIO adapter writes '{out.suffix}' files "
                          "(install opentimelineio-plugins for EDL, FCP XML, AAF)") from None
    if not adapter.has_feature("write_to_file") and not adapter.has_feature("write_to_string"):
        raise PluginError(f"the OTIO adapter '{adapter.name}' cannot write files")


def write_timeline(timeline: otio.schema.Timeline, out: pathlib.Path, *, overwrite: bool) -> None:
    """Write atomically: a temp file in the same folder (same suffix, so the same
    adapter), then os.replace; a failed write leaves nothing behind."""
    from fairy_proto.files import atomic_path

    if out.exists() and not overwrite:
        raise OutputExistsError(f"output {out} exists; pass --overwrite to replace it")
    try:
        # Nothing is at the temporary path yet (some adapters refuse to write over a file).
        with atomic_path(out, overwrite=True) as temp:
            otio.adapters.write_to_file(timeline, str(temp))
    except Exception as exc:
        raise PluginError(f"cannot write {out}: {' '.join(str(exc).split())}") from None


# -- choosing clips --------------------------------------------------------------


def _video_tracks(timeline: otio.schema.Timeline) -> list[otio.schema.Track]:
    return [t for t in timeline.tracks if isinstance(t, otio.schema.Track) and t.kind == otio.schema.TrackKind.Video]


def _pick_tracks(timeline: otio.schema.Timeline, track: str | None) -> list[tuple[int, otio.schema.Track]]:
    tracks = list(enumerate(_video_tracks(timeline), start=1))
    if not tracks:
        raise SelectionError("the timeline has no video track")
    if track is None:
        return [(n, t) for n, t in tracks if not is_result_track(t)]
    spec = track.strip()
    number = spec[1:] if spec[:1] in "vV" and spec[1:].isdigit() else spec
    if number.isdigit():
        n = int(number)
        if not 1 <= n <= len(tracks):
            raise SelectionError(f"--track {spec}: the timeline has video tracks V1 to V{len(tracks)}")
        return [tracks[n - 1]]
    named = [(n, t) for n, t in tracks if t.name == spec]
    if not named:
        names = ", ".join(f"V{n} '{t.name}'" for n, t in tracks)
        raise SelectionError(f"--track '{spec}' matches no video track ({names})")
    if len(named) > 1:
        raise SelectionError(f"--track '{spec}' matches {len(named)} tracks; use its number (V1, V2...)")
    return named


def _overlaps(a: TimeRange, b: TimeRange) -> bool:
    eps = 1e-9
    return (a.start_time.to_seconds() < b.end_time_exclusive().to_seconds() - eps
            and b.start_time.to_seconds() < a.end_time_exclusive().to_seconds() - eps)


def choose_clips(timeline: otio.schema.Timeline, *, track: str | None = None, time_range: str | None = None,
                 clip_names: list[str] | None = None) -> list[Chosen]:
    """The clips the user chose, in timeline order per track. Clips that are
    hidden or retimed are still chosen here (and reported when edited)."""
    chosen = []
    for number, t in _pick_tracks(timeline, track):
        for clip in t.find_clips():
            chosen.append(Chosen(clip=clip, track_number=number, label=f"V{number} {clip.name}"))
    if time_range is not None:
        rate = timeline_rate(timeline)
        wanted = parse_range(time_range, rate, start=timeline.global_start_time)
        kept = []
        for c in chosen:
            try:
                if _overlaps(clip_timeline_range(c.clip), wanted):
                    kept.append(c)
            except ClipError:
                kept.append(c)  # reported as skipped later, with the reason
        chosen = kept
    if clip_names:
        names = {c.clip.name for c in chosen}
        missing = [n for n in clip_names if n not in names]
        if missing:
            raise SelectionError(f"no clip named {', '.join(repr(n) for n in missing)} in the chosen tracks/range")
        chosen = [c for c in chosen if c.clip.name in clip_names]
    if not chosen:
        raise SelectionError("no clip matches the choice (--track, --range, --clip)")
    return chosen


# -- the commands ----------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fairy timeline",
                                     description="Edit clips of an OTIO-readable timeline with a Fairy server.")
    sub = parser.add_subparsers(dest="command", required=True)

    edit = sub.add_parser("edit", help="edit the chosen clips and write the relinked timeline")
    edit.add_argument("input", type=pathlib.Path, help="timeline to read (.otio, or any installed OTIO adapter)")
    edit.add_argument("-i", "--instruction", required=True, help='what to do, e.g. "make it snowy"')
    edit.add_argument("-o", "--output", required=True, type=pathlib.Path, help="timeline to write")
    choice = edit.add_argument_group("which clips (default: every clip on every video track)")
    choice.add_argument("--track", help="a video track: its number (1 or V1 = the lowest) or its name")
    choice.add_argument("--range", dest="time_range", metavar="START-END",
                        help="clips overlapping this timeline range; timecode as shown by the editor "
                             "(HH:MM:SS:FF, ';' for drop-frame) or frames from the timeline's start; END exclusive")
    choice.add_argument("--clip", action="append", dest="clips", metavar="NAME", help="a clip by name (repeatable)")
    _add_server_options(edit.add_argument_group("server"))
    params = edit.add_argument_group("edit settings (default: the server's)")
    add_arguments(params, REQUEST_SETTING_NAMES, unset_means="the server's")
    params.add_argument("--handles", type=int, default=0, help="extra frames each side, where the media has them")
    out = edit.add_argument_group("output")
    out.add_argument("--as-version", action="store_true",
                     help="add each result as another media reference of its clip instead of a track above")
    out.add_argument("--media-dir", type=pathlib.Path,
                     help="where rendered clips go (default: OUTPUT's folder / OUTPUT-stem_fairy)")
    out.add_argument("--overwrite", action="store_true", help="replace an existing output timeline")

    clips = sub.add_parser("clips", help="list the timeline's video clips with their ranges")
    clips.add_argument("input", type=pathlib.Path)

    info = sub.add_parser("info", help="show what was done to every Fairy result in a timeline (metadata[\"fairy\"])")
    info.add_argument("input", type=pathlib.Path)

    redo = sub.add_parser("redo", help="render Fairy results again from what they recorded, e.g. with another seed")
    redo.add_argument("input", type=pathlib.Path, help="a timeline holding Fairy results")
    redo.add_argument("-o", "--output", required=True, type=pathlib.Path, help="timeline to write")
    redo.add_argument("--clip", action="append", dest="clips", metavar="NAME",
                      help="only the result (or source clip, for versions) with this name (repeatable)")
    redo.add_argument("-i", "--instruction", help="a new instruction (default: the recorded one)")
    _add_server_options(redo.add_argument_group("server (default: $FAIRY_SERVER or the recorded one)"),
                        recorded_default=True)
    changes = redo.add_argument_group("edit settings (default: as recorded)")
    add_arguments(changes, REQUEST_SETTING_NAMES, unset_means="as recorded", unset_all=True)
    redo.add_argument("--media-dir", type=pathlib.Path,
                      help="where rendered clips go (default: OUTPUT's folder / OUTPUT-stem_fairy)")
    redo.add_argument("--overwrite", action="store_true", help="replace an existing output timeline")
    return parser


def _add_server_options(server, *, recorded_default: bool = False) -> None:
    default = os.environ.get("FAIRY_SERVER") or (None if recorded_default else DEFAULT_ADDRESS)
    fallback = "the one each result recorded" if recorded_default else DEFAULT_ADDRESS
    server.add_argument("--server", default=default, help=f"address (default $FAIRY_SERVER or {fallback})")
    server.add_argument("--token", default=os.environ.get("FAIRY_TOKEN"), help="bearer token (default $FAIRY_TOKEN)")
    server.add_argument("--tls-ca", type=pathlib.Path, help="PEM root certificates: connect with TLS")
    server.add_argument("--upload", action="store_true",
                        help="send the media to the server (for a server on another machine)")
    server.add_argument("--connect-timeout", type=float, default=10.0, help="seconds to wait for a starting server")


def _describe(record) -> str:
    settings = " ".join(f"{name} {value}" for name, value in record.settings.items())
    source = record.source
    return (f"{record.instruction!r} from {source.name!r} ({source.media} frames {source.start_frame}+"
            f"{source.frame_count} @ {format_rate(source.rate)}); model {record.model or '?'}, seed {record.seed}"
            f"{', ' + settings if settings else ''}; job {record.job_id}{' on ' + record.server if record.server else ''}")


def _info(args, out: TextIO) -> int:
    timeline = read_timeline(args.input)
    items = edited_items(timeline)
    for clip, how, record in items:
        where = "result clip" if how == "clip" else "version of clip"
        out.write(f"{where} {clip.name!r}: {_describe(record)}\n")
    if not items:
        out.write("no Fairy results in this timeline\n")
    return EXIT_OK


def _list_clips(args, out: TextIO) -> int:
    timeline = read_timeline(args.input)
    rate = timeline_rate(timeline)
    origin = (timeline.global_start_time.rescaled_to(rate) if timeline.global_start_time is not None
              else RationalTime(0, rate))
    for number, track in enumerate(_video_tracks(timeline), start=1):
        out.write(f"V{number} {track.name!r}{' (fairy results)' if is_result_track(track) else ''}\n")
        for clip in track.find_clips():
            try:
                seen = clip_timeline_range(clip)
                begin = origin + seen.start_time.rescaled_to(rate)
                end = begin + seen.duration.rescaled_to(rate)
                where = f"{begin.to_timecode(rate)}-{end.to_timecode(rate)}"
            except ClipError as exc:
                where = f"({exc})"
            try:
                media = clip_media_range(clip, base_dir=args.input.parent)
                what = f"{media.media_path} frames {media.start_frame}+{media.frame_count} @ {media.rate}"
            except ClipError as exc:
                what = f"not editable: {exc}"
            out.write(f"  {clip.name!r} {where} {what}\n")
    return EXIT_OK


def _edit(args, err: TextIO) -> int:
    params = EditParams(args.instruction, **values_from_arguments(args, REQUEST_SETTING_NAMES))
    params.check()
    if args.handles < 0:
        raise PluginError(f"--handles must be 0 or more, got {args.handles}")
    _check_output(args.output, args.input, args.overwrite)
    timeline = read_timeline(args.input)
    chosen = choose_clips(timeline, track=args.track, time_range=args.time_range, clip_names=args.clips)

    # Media ranges first: clips that cannot be edited are reported, never dropped.
    editable: list[tuple[Chosen, object]] = []
    skipped: list[str] = []
    uploaded: set[str] = set()
    for c in chosen:
        try:
            editable.append((c, clip_media_range(c.clip, handles=args.handles, base_dir=args.input.parent)))
        except ClipError as exc:
            skipped.append(f"skipped {c.label}: {exc}")
    for line in skipped:
        err.write(line + "\n")
    if not editable:
        err.write("no chosen clip can be edited; nothing written\n")
        return EXIT_INCOMPLETE

    media_dir = args.media_dir or args.output.parent / f"{args.output.stem}_fairy"
    certificates = args.tls_ca.read_bytes() if args.tls_ca else None
    by_key = {c.label: c for c, _ in editable}

    def place(item: EditItem, update, record) -> otio.schema.Clip | str:
        c = by_key[item.key]
        if args.as_version:
            return add_as_media_reference(c.clip, str(update.result_path), update.job, record)
        return place_on_track_above(timeline, c.clip, str(update.result_path), update.job, record)

    with FairyClient(args.server, token=args.token, root_certificates=certificates,
                     connect_timeout=args.connect_timeout) as client:
        client.server_info()  # one clear line now if the server is not there
        with EditSession(client, media_dir) as session, _ctrl_c_as_a_flag() as interrupted:
            for c, media in editable:
                if args.upload and media.media_path not in uploaded:
                    err.write(f"uploading {media.media_path}\n")
                    uploaded.add(media.media_path)
                session.submit(EditItem(key=c.label, name=c.clip.name, media=media, labels={
                    "editor": "fairy timeline", "timeline": timeline.name or "", "clip": c.clip.name,
                    "track": f"V{c.track_number}"}), params, upload=args.upload)
                if interrupted.is_set():
                    break
            result = session.run(place, stream=err, interrupted=interrupted)
    if result.cancelled:
        err.write(f"\ncancelled {len(result.outcomes)} jobs; {args.output} not written\n")
        return EXIT_INTERRUPTED

    placed = len(result.placed)
    failed = [f"{o.item.key}: {o.error}" for o in result.failed]
    for line in failed:
        err.write(f"not edited {line}\n")
    if not placed:
        err.write("no clip was edited; nothing written\n")
        return EXIT_INCOMPLETE
    write_timeline(timeline, args.output, overwrite=args.overwrite)
    err.write(f"wrote {args.output}: {placed} edited, {len(failed)} failed, {len(skipped)} skipped "
              f"(rendered clips in {media_dir})\n")
    return EXIT_OK if not failed and not skipped else EXIT_INCOMPLETE


def _redo(args, err: TextIO) -> int:
    """Render recorded results again (same source range, instruction, model, seed and settings unless
    changed) and relink them: a result clip gets the new media in place, a version gets a new version."""
    _check_output(args.output, args.input, args.overwrite)
    timeline = read_timeline(args.input)
    items = [(clip, how, record) for clip, how, record in edited_items(timeline)
             if not args.clips or clip.name in args.clips]
    if not items:
        raise SelectionError("no Fairy result matches" + (f" --clip {', '.join(args.clips)}" if args.clips else ""))
    changes = values_from_arguments(args, REQUEST_SETTING_NAMES)
    servers = {args.server or record.server for _, _, record in items}
    if len(servers) != 1 or not next(iter(servers)):
        raise SelectionError("the results were made on different servers (or none is recorded); pass --server")
    address = servers.pop()
    work = []
    for n, (clip, how, record) in enumerate(items):
        params = params_from_record(record, instruction=args.instruction, **changes)
        params.check()
        media = MediaRange(media_path=record.source.media, start_frame=record.source.start_frame,
                           frame_count=record.source.frame_count, rate=record.source.rate,
                           handles_before=record.handles_before, handles_after=record.handles_after)
        work.append((EditItem(key=f"{n + 1} {clip.name}", name=record.source.name, media=media,
                              labels={"editor": "fairy timeline", "timeline": timeline.name or "",
                                      "clip": clip.name, "redo_of": record.job_id}), clip, how, params))
    by_key = {item.key: (clip, how) for item, clip, how, _ in work}

    def place(item: EditItem, update, record) -> otio.schema.Clip | str:
        clip, how = by_key[item.key]
        if how == "clip":
            return replace_result(clip, str(update.result_path), update.job, record)
        activate_original_media(clip)  # the new version is placed in the original's frames, like the first
        return add_as_media_reference(clip, str(update.result_path), update.job, record)

    media_dir = args.media_dir or args.output.parent / f"{args.output.stem}_fairy"
    certificates = args.tls_ca.read_bytes() if args.tls_ca else None
    with FairyClient(address, token=args.token, root_certificates=certificates,
                     connect_timeout=args.connect_timeout) as client:
        client.server_info()
        with EditSession(client, media_dir) as session, _ctrl_c_as_a_flag() as interrupted:
            for item, _, _, params in work:
                session.submit(item, params, upload=args.upload)
            result = session.run(place, stream=err, interrupted=interrupted)
    if result.cancelled:
        err.write(f"\ncancelled {len(result.outcomes)} jobs; {args.output} not written\n")
        return EXIT_INTERRUPTED
    for o in result.failed:
        err.write(f"not redone {o.item.key}: {o.error}\n")
    if not result.placed:
        err.write("no result was rendered again; nothing written\n")
        return EXIT_INCOMPLETE
    write_timeline(timeline, args.output, overwrite=args.overwrite)
    err.write(f"wrote {args.output}: {len(result.placed)} rendered again, {len(result.failed)} failed\n")
    return EXIT_OK if not result.failed else EXIT_INCOMPLETE


@contextlib.contextmanager
def _ctrl_c_as_a_flag():
    """While jobs run, Ctrl-C sets a flag that the loop checks instead of raising KeyboardInterrupt wherever
    the main thread happens to be: raised between taking a lock and entering its ``with`` block, it would
    leave the job runner's lock held and the cancel that follows waiting on it for ever."""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted  # signals reach only the main thread; nothing to install
        return
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


def main(argv: list[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Entry point of `fairy timeline ...` (the `fairy` CLI passes the words after "timeline")."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    args = _parser().parse_args(argv)
    try:
        if args.command == "clips":
            return _list_clips(args, out)
        if args.command == "info":
            return _info(args, out)
        if args.command == "redo":
            return _redo(args, err)
        return _edit(args, err)
    except KeyboardInterrupt:
        err.write("fairy timeline: interrupted; nothing written\n")
        return EXIT_INTERRUPTED
    except PluginError as exc:
        err.write(f"fairy timeline: {exc}\n")
        return EXIT_USAGE if isinstance(exc, (SelectionError, OutputExistsError)) else EXIT_INCOMPLETE


if __name__ == "__main__":
    sys.exit(main())
