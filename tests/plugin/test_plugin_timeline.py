"""`fairy timeline` against the session's real ``fairy-server`` (tiny model, CPU, one worker).

Every clip of a sample timeline points at a real clip (``fairy.video.make_test_clip``) in the server's
media root, as long as the clip's available range says its media is. What the server was asked is read
back from the server itself (ListJobs, by the ``timeline`` label: each test names its timeline uniquely).
A job that must fail asks the server to run out of memory (``live.OOM``); one that must still be running
when Ctrl-C comes asks it to hold the job in FRAMES (``live.HOLD``).
"""

from __future__ import annotations

import hashlib
import io
import pathlib
import shutil
import signal
import subprocess
import sys
import time
import uuid
import zipfile
from fractions import Fraction

import opentimelineio as otio
import pytest
from fairy_proto.files import TEMPORARY_GLOB
from fairy_proto.v1 import fairy_pb2
from fairy_proto.v1.jobs import TERMINAL_STATES
from fairy_server.config import ServerConfig
from opentimelineio.opentime import RationalTime, TimeRange

from fairy_plugin.errors import SelectionError
from fairy_plugin.ranges import clip_timeline_range
from fairy_plugin.relink import is_result_track
from fairy_plugin.timeline import choose_clips, main
from otio_helpers import SAMPLES_DIR, same_span, serialized_tracks
from real_server import closed_port, unique_seed

SAMPLES = SAMPLES_DIR
# For the long clips of nested_example.otio (600 frames in all): the server's cheapest settings.
CHEAP = ("--long-side", "16", "--steps", "1", "--anchors", "1")


def _run(args, address):
    err = io.StringIO()
    rc = main(list(args) + ["--server", address, "--connect-timeout", "5"], stderr=err)
    return rc, err.getvalue()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """``clips(frames)``: a real 24 fps clip of ``frames`` frames, made once for the module."""
    from fairy.video import make_test_clip

    folder = tmp_path_factory.mktemp("timeline-clips")
    made: dict[int, pathlib.Path] = {}

    def clip(frames: int) -> pathlib.Path:
        if frames not in made:
            made[frames] = make_test_clip(folder / f"{frames}.mov", frames=frames, width=64, height=48,
                                          fps=Fraction(24), audio=False)
        return made[frames]

    return clip


def _frames_of(clip) -> int | None:
    """How long the clip's media is, where its available range says."""
    available = getattr(clip.media_reference, "available_range", None)
    return round(available.duration.to_frames()) if available is not None else None


def _copy_with_media(sample: str, folder: pathlib.Path, media_root: pathlib.Path, clips, *,
                     missing: set[str] = frozenset()) -> tuple[pathlib.Path, str]:
    """The sample in ``folder``, named uniquely, with every clip pointing at a real clip
    ``media_root/NAME/media<i>.mov`` (except the ``missing`` ones, which get a MissingReference); (its path,
    its name NAME). A clip is as long as its available range says; where there is none, all are as long as
    the longest such clip needs."""
    timeline = otio.adapters.read_from_file(str(SAMPLES / sample))
    timeline.name = f"{pathlib.Path(sample).stem}-{uuid.uuid4().hex[:8]}"
    media_dir = media_root / timeline.name
    media_dir.mkdir(parents=True)
    unsaid = max((round(c.source_range.end_time_exclusive().to_frames()) for c in timeline.find_clips()
                  if _frames_of(c) is None), default=0)
    for i, clip in enumerate(timeline.find_clips()):
        if clip.name in missing:
            clip.media_reference = otio.schema.MissingReference()
            continue
        media = media_dir / f"media{i}.mov"
        shutil.copyfile(clips(_frames_of(clip) or unsaid), media)
        available = clip.media_reference.available_range if clip.media_reference else None
        clip.media_reference = otio.schema.ExternalReference(target_url=media.as_uri(), available_range=available)
    path = folder / sample
    otio.adapters.write_to_file(timeline, str(path))
    return path, timeline.name


def _jobs(live, timeline_name: str) -> list[fairy_pb2.Job]:
    """The server's jobs for this timeline, oldest first."""
    jobs = live.stub.ListJobs(fairy_pb2.ListJobsRequest(limit=1000), timeout=30).jobs
    return [j for j in reversed(jobs) if j.request.labels.get("timeline") == timeline_name]


def test_edit_every_clip_and_relink(live, clips, tmp_path):
    inp, name = _copy_with_media("transition.otio", tmp_path, live.media_root, clips)
    before = inp.read_bytes()
    out = tmp_path / "out.otio"
    rc, err = _run(["edit", str(inp), "-i", "make it snowy", "-o", str(out), "--seed", "5", "--steps", "3",
                    "--handles", "2"], live.address)
    assert rc == 0, err
    assert inp.read_bytes() == before  # the input is never touched
    original = otio.adapters.read_from_file(str(inp))
    result = otio.adapters.read_from_file(str(out))
    assert serialized_tracks(result, keep=lambda t: not is_result_track(t)) == serialized_tracks(original)
    assert [t.name for t in result.tracks] == ["", "Fairy 1"]
    sources = original.tracks[0].find_clips()
    results = result.tracks[1].find_clips()
    assert len(results) == len(sources) == 4
    jobs = {j.job_id: j for j in _jobs(live, name)}
    for source, new in zip(sources, results):
        assert same_span(new.range_in_parent(), clip_timeline_range(source))
        assert new.metadata["fairy"]["source"]["name"] == source.name
        assert new.metadata["fairy"]["seed"] == 5
        media = pathlib.Path(otio.url_utils.filepath_from_url(new.media_reference.target_url))
        assert media.parent == tmp_path / "out_fairy" and media.is_file()
        job = jobs[new.metadata["fairy"]["job_id"]]
        assert job.state == fairy_pb2.JOB_STATE_DONE and job.request.labels["clip"] == source.name
    # What the server was asked: each clip's frames, handles where the media has them.
    requests = {j.request.labels["clip"]: j.request for j in jobs.values()}
    assert len(requests) == 4
    assert (requests["Clip-002"].range.start_frame, requests["Clip-002"].range.frame_count) == (2, 6)
    assert (requests["Clip-002"].handles.before, requests["Clip-002"].handles.after) == (2, 1)
    assert requests["Clip-004"].parameters.steps == 3
    # Progress: a bar per job and an overall one.
    assert "V1 Clip-003" in err and "overall" in err and "4/4 finished" in err
    assert "wrote" in err


def test_missing_media_is_reported_and_kept(live, clips, tmp_path):
    inp, name = _copy_with_media("simple_cut.otio", tmp_path, live.media_root, clips, missing={"Clip-002"})
    out = tmp_path / "out.otio"
    rc, err = _run(["edit", str(inp), "-i", "snow", "-o", str(out)], live.address)
    assert rc == 1  # written, but not everything was edited
    assert "skipped V1 Clip-002: clip 'Clip-002' has no media (missing media reference)" in err
    result = otio.adapters.read_from_file(str(out))
    assert [c.name for c in result.tracks[0].find_clips()] == ["Clip-001", "Clip-002", "Clip-003", "Clip-004"]
    assert isinstance(result.tracks[0].find_clips()[1].media_reference, otio.schema.MissingReference)
    assert len(result.tracks[1].find_clips()) == 3
    assert sorted(j.request.labels["clip"] for j in _jobs(live, name)) == ["Clip-001", "Clip-003", "Clip-004"]


def test_nested_and_retimed_clips(live, clips, tmp_path):
    inp, name = _copy_with_media("nested_example.otio", tmp_path, live.media_root, clips)
    out = tmp_path / "out.otio"
    rc, err = _run(["edit", str(inp), "-i", "snow", "-o", str(out), *CHEAP], live.address)
    assert rc == 1
    assert "skipped V1 Clip Inside A Stack 2: clip 'Clip Inside A Stack 2' is retimed by a LinearTimeWarp" in err
    assert "skipped V1 Clip Inside A Track" in err
    original = otio.adapters.read_from_file(str(inp))
    result = otio.adapters.read_from_file(str(out))
    assert serialized_tracks(result, keep=lambda t: not is_result_track(t)) == serialized_tracks(original)
    placed = {c.metadata["fairy"]["source"]["name"]: c for c in result.tracks[1].find_clips()}
    assert len(placed) == 5 == len(_jobs(live, name))
    for source in original.find_clips():
        if source.name in placed:
            assert same_span(placed[source.name].range_in_parent(), clip_timeline_range(source))


def test_as_version_adds_media_references(live, clips, tmp_path):
    inp, _ = _copy_with_media("simple_cut.otio", tmp_path, live.media_root, clips)
    out = tmp_path / "out.otio"
    rc, err = _run(["edit", str(inp), "-i", "snow", "-o", str(out), "--as-version", "--clip", "Clip-003"],
                   live.address)
    assert rc == 0, err
    result = otio.adapters.read_from_file(str(out))
    assert len(result.tracks) == 1
    clips = {c.name: c for c in result.find_clips()}
    assert clips["Clip-003"].active_media_reference_key == "fairy"
    assert clips["Clip-003"].media_references()["DEFAULT_MEDIA"].target_url.endswith("media2.mov")
    assert clips["Clip-001"].active_media_reference_key == "DEFAULT_MEDIA"


def test_output_rules(live, clips, tmp_path):
    inp, name = _copy_with_media("simple_cut.otio", tmp_path, live.media_root, clips)
    out = tmp_path / "out.otio"
    out.write_text("keep me")
    rc, err = _run(["edit", str(inp), "-i", "snow", "-o", str(out)], live.address)
    assert rc == 2 and "exists; pass --overwrite" in err and out.read_text() == "keep me"
    rc, err = _run(["edit", str(inp), "-i", "snow", "-o", str(inp), "--overwrite"], live.address)
    assert rc == 2 and "is the input timeline" in err
    rc, err = _run(["edit", str(inp), "-i", "snow", "-o", str(tmp_path / "out.xyz")], live.address)
    assert rc == 1 and "no installed OTIO adapter writes '.xyz' files" in err
    rc, err = _run(["edit", str(inp), "-i", "  ", "-o", str(tmp_path / "o2.otio")], live.address)
    assert rc == 1 and "the instruction is empty" in err
    assert _jobs(live, name) == []  # all refused before any job
    rc, err = _run(["edit", str(inp), "-i", "snow", "-o", str(out), "--overwrite", "--clip", "Clip-001"],
                   live.address)
    assert rc == 0, err
    assert otio.adapters.read_from_file(str(out)).tracks[1].find_clips()[0].name == "snow"
    assert [j.request.labels["clip"] for j in _jobs(live, name)] == ["Clip-001"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left behind
    assert not list(tmp_path.rglob(TEMPORARY_GLOB))


def test_failed_jobs_write_nothing(live, clips, tmp_path):
    inp, name = _copy_with_media("simple_cut.otio", tmp_path, live.media_root, clips)
    out = tmp_path / "out.otio"
    rc, err = _run(["edit", str(inp), "-i", f"snow {live.OOM}", "-o", str(out), "--clip", "Clip-001"],
                   live.address)
    assert rc == 1
    (job,) = _jobs(live, name)  # out of memory at every batch size: the server's own message
    assert job.state == fairy_pb2.JOB_STATE_FAILED and job.error_message
    assert f"not edited V1 Clip-001: failed: {job.error_message}\n" in err
    assert "nothing written" in err and not out.exists()


def test_upload_sends_media_for_a_remote_server(live, clips, tmp_path):
    # The media lie outside the server's media root: only what is uploaded can be rendered.
    inp, name = _copy_with_media("simple_cut.otio", tmp_path, tmp_path, clips)
    media = tmp_path / name / "media0.mov"
    rc, err = _run(["edit", str(inp), "-i", "snow", "-o", str(tmp_path / "o.otio"), "--clip", "Clip-001"],
                   live.address)
    assert rc == 1 and "not edited V1 Clip-001" in err and not (tmp_path / "o.otio").exists()  # not by path
    assert _jobs(live, name) == []  # refused at submission
    rc, err = _run(["edit", str(inp), "-i", "snow", "-o", str(tmp_path / "o.otio"), "--upload", "--clip", "Clip-001"],
                   live.address)
    assert rc == 0, err
    assert f"uploading {media}" in err
    (job,) = _jobs(live, name)
    assert job.state == fairy_pb2.JOB_STATE_DONE and not job.request.source.path
    assert job.request.source.upload_id == hashlib.sha256(media.read_bytes()).hexdigest()
    stored = ServerConfig(data_dir=live.data_dir).uploads_path / job.request.source.upload_id / media.name
    assert stored.read_bytes() == media.read_bytes()


def test_server_not_running(tmp_path, clips):
    inp, _ = _copy_with_media("simple_cut.otio", tmp_path, tmp_path, clips)
    err = io.StringIO()
    with closed_port() as address:
        rc = main(["edit", str(inp), "-i", "snow", "-o", str(tmp_path / "o.otio"), "--server", address,
                   "--connect-timeout", "0.3"], stderr=err)
    assert rc == 1
    assert err.getvalue() == (f"fairy timeline: Fairy server is not running at {address} "
                              "(start it with `fairy-server`)\n")
    assert not (tmp_path / "o.otio").exists()


def test_ctrl_c_cancels_the_submitted_jobs(live, clips, tmp_path):
    inp, name = _copy_with_media("simple_cut.otio", tmp_path, live.media_root, clips)
    out = tmp_path / "out.otio"
    argv = ["edit", str(inp), "-i", f"snow {live.HOLD}", "-o", str(out), "--server", live.address,
            "--seed", str(unique_seed())]
    code = f"import sys; from fairy_plugin.timeline import main; sys.exit(main({argv!r}))"
    with open(tmp_path / "stderr.txt", "w") as stderr:  # a file, not a pipe nobody reads while it waits
        proc = subprocess.Popen([sys.executable, "-c", code], stderr=stderr)
    try:
        # The server has one worker: the first job is held in FRAMES, the other three wait in the queue.
        deadline = time.monotonic() + 60
        while True:
            jobs = _jobs(live, name)
            if len(jobs) == 4 and fairy_pb2.JOB_STATE_FRAMES in {j.state for j in jobs}:
                break
            assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()
            assert time.monotonic() < deadline, [fairy_pb2.JobState.Name(j.state) for j in jobs]
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130, (tmp_path / "stderr.txt").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = (tmp_path / "stderr.txt").read_text()
    assert f"cancelled 4 jobs; {out} not written" in err
    final = [live.wait_for(j.job_id, TERMINAL_STATES) for j in _jobs(live, name)]
    assert len(final) == 4
    assert all(j.cancel_requested for j in final)
    assert {j.state for j in final} == {fairy_pb2.JOB_STATE_CANCELLED}  # the held one and the queued ones
    assert not out.exists() and not (tmp_path / "out_fairy").exists()


def test_choose_by_track_range_and_name():
    timeline = otio.adapters.read_from_file(str(SAMPLES / "multitrack.otio"))
    names = lambda chosen: [c.clip.name for c in chosen]
    assert len(choose_clips(timeline)) == 5
    assert names(choose_clips(timeline, track="2")) == ["t-hawk (loop)-HD.mp4"]
    assert names(choose_clips(timeline, track="V3")) == ["KOLL-HD.mp4"]
    assert names(choose_clips(timeline, track="Sequence 3")) == ["KOLL-HD.mp4"]
    # Frames 700-810 overlap the end of the first clip (0-720) and the start of the next (803-).
    assert names(choose_clips(timeline, track="1", time_range="700-810")) == ["tech.fux (loop)-HD.mp4",
                                                                            "out-b (loop)-HD.mp4"]
    # Touching is not overlapping: END is exclusive.
    with pytest.raises(SelectionError, match="no clip matches"):
        choose_clips(timeline, track="1", time_range="720-803")
    assert names(choose_clips(timeline, time_range="00:00:33:00-00:00:33:01")) == ["t-hawk (loop)-HD.mp4"]
    assert names(choose_clips(timeline, clip_names=["KOLL-HD.mp4"])) == ["KOLL-HD.mp4"]
    for kwargs, message in [({"track": "9"}, "video tracks V1 to V3"), ({"track": "Nope"}, "matches no video track"),
                            ({"clip_names": ["nope"]}, "no clip named 'nope'"),
                            ({"time_range": "5-1"}, "ends before it starts")]:
        with pytest.raises(SelectionError, match=message):
            choose_clips(timeline, **kwargs)


def test_choose_skips_result_tracks_unless_asked(tmp_path):
    timeline = otio.adapters.read_from_file(str(SAMPLES / "simple_cut.otio"))
    from otio_helpers import done_job
    from fairy_plugin.relink import place_on_track_above
    clip = timeline.find_clips()[0]
    place_on_track_above(timeline, clip, "/r/a.mp4", done_job(clip))
    assert len(choose_clips(timeline)) == 4
    assert [c.label for c in choose_clips(timeline, track="2")] == ["V2 make it snowy"]


def test_drop_frame_range_on_a_2997_timeline():
    rate = 30000 / 1001
    timeline = otio.schema.Timeline(global_start_time=otio.opentime.RationalTime.from_timecode("01:00:00;00", rate))
    track = otio.schema.Track()
    for i in range(3):
        track.append(otio.schema.Clip(name=f"c{i}", media_reference=otio.schema.ExternalReference("file:///a.mov"),
                                      source_range=otio.opentime.TimeRange(otio.opentime.RationalTime(0, rate),
                                                                           otio.opentime.RationalTime(1800, rate))))
    timeline.tracks.append(track)
    # c1 covers frames 1800-3599: 01:01:00;02 to 01:02:00;04 in drop-frame timecode.
    picked = choose_clips(timeline, time_range="01:01:00;02-01:01:00;03")
    assert [c.clip.name for c in picked] == ["c1"]
    picked = choose_clips(timeline, time_range="01:00:59;29-01:01:00;03")
    assert [c.clip.name for c in picked] == ["c0", "c1"]


def test_other_adapters_by_suffix(live, clips, tmp_path):
    """.otioz (a zip bundling the timeline with its media) is written by its own
    adapter, chosen from the output's suffix, and reads back."""
    inp, _ = _copy_with_media("simple_cut.otio", tmp_path, live.media_root, clips)
    out = tmp_path / "bundle.otioz"
    rc, err = _run(["edit", str(inp), "-i", "snow", "-o", str(out), "--clip", "Clip-002"], live.address)
    assert rc == 0, err
    with zipfile.ZipFile(out) as bundle:
        names = bundle.namelist()
    assert "content.otio" in names and any(n.startswith("media/") and n.endswith(".mp4") for n in names)
    (tmp_path / "unzipped").mkdir()
    back = otio.adapters.read_from_file(str(out), extract_to_directory=str(tmp_path / "unzipped"))
    (new,) = back.tracks[1].find_clips()
    assert new.metadata["fairy"]["source"]["name"] == "Clip-002"


def _for_exchange(timeline: otio.schema.Timeline) -> otio.schema.Timeline:
    """The timeline as an EDL or FCP 7 XML can hold it: every clip with an explicit source range. An EDL
    keeps no available range, so its source timecodes read as frames from the media's first frame: here
    they are (the real clips start at frame 0, so each available range is moved to start at 0 too; the
    sample's credits.mov starts at frame 100)."""
    for clip in timeline.find_clips():
        trimmed, available = clip.trimmed_range(), clip.media_reference.available_range
        clip.source_range = TimeRange(trimmed.start_time - available.start_time, trimmed.duration)
        clip.media_reference.available_range = TimeRange(RationalTime(0, available.duration.rate), available.duration)
    return timeline


@pytest.mark.parametrize("suffix, out_suffix", [(".xml", ".xml"), (".edl", ".otio")])
def test_fcp_xml_and_edl_through_opentimelineio_plugins(live, clips, tmp_path, suffix, out_suffix):
    """With opentimelineio-plugins installed (the test extra), FCP 7 XML and CMX 3600 EDL timelines are read,
    and the relinked timeline written in another format (an EDL holds a single video track)."""
    source, _ = _copy_with_media("simple_cut.otio", tmp_path, live.media_root, clips)
    inp = tmp_path / f"cut{suffix}"
    timeline = _for_exchange(otio.adapters.read_from_file(str(source)))
    otio.adapters.write_to_file(timeline, str(inp))
    out = tmp_path / f"cut_snow{out_suffix}"
    rc, err = _run(["edit", str(inp), "-i", "snow", "-o", str(out), "--clip", "Clip-002"], live.address)
    assert rc == 0, err
    original = otio.adapters.read_from_file(str(inp))
    back = otio.adapters.read_from_file(str(out))
    before = [c for c in original.find_clips() if c.name == "Clip-002"][0]
    placed = [c for c in back.find_clips() if c.name != "Clip-002" and c.name not in {x.name for x in original.find_clips()}]
    assert len(placed) == 1
    assert same_span(placed[0].trimmed_range_in_parent(), before.trimmed_range_in_parent())


def _shift_record_timecodes(edl: str, hours: int, rate: float) -> str:
    """The EDL with every event's record in and out moved ``hours`` later."""
    lines = []
    for line in edl.splitlines():
        fields = line.split()
        if len(fields) >= 8 and fields[0].isdigit():
            shifted = [otio.opentime.to_timecode(otio.opentime.from_timecode(tc, rate)
                                                 + otio.opentime.RationalTime(hours * 3600 * rate, rate), rate)
                       for tc in fields[-2:]]
            line = line[: line.rindex(fields[-2])] + " ".join(shifted)
        lines.append(line)
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("hours", [0, 1, 10])
@pytest.mark.parametrize("suffix", [".edl", ".xml"])
def test_timelines_starting_at_any_hour(live, clips, tmp_path, hours, suffix):
    """An EDL whose record timecode starts at 01:00:00:00 (the usual case) or any other hour is read by the
    CMX reader as a track trimmed from -1 h; FCP XML carries the hour as the timeline's start. Every clip is
    editable either way, and its result lands over it at the same record time."""
    source, _ = _copy_with_media("simple_cut.otio", tmp_path, live.media_root, clips)
    timeline = _for_exchange(otio.adapters.read_from_file(str(source)))
    rate = timeline.tracks[0].find_clips()[0].source_range.duration.rate
    inp = tmp_path / f"cut{suffix}"
    if suffix == ".edl":
        inp.write_text(_shift_record_timecodes(otio.adapters.write_to_string(timeline, "cmx_3600"), hours, rate))
    else:
        timeline.global_start_time = otio.opentime.RationalTime(hours * 3600 * rate, rate)
        otio.adapters.write_to_file(timeline, str(inp))
    original = otio.adapters.read_from_file(str(inp))
    if suffix == ".edl" and hours:
        assert original.tracks[0].source_range.start_time.value == -hours * 3600 * rate  # the reader's convention
    listing = io.StringIO()
    assert main(["clips", str(inp)], stdout=listing, stderr=listing) == 0, listing.getvalue()
    assert "not editable" not in listing.getvalue() and "hidden" not in listing.getvalue()
    assert len(choose_clips(original)) == 4
    out = tmp_path / f"cut_snow{suffix}.otio"
    rc, err = _run(["edit", str(inp), "-i", "snow", "-o", str(out)], live.address)
    assert rc == 0, err
    back = otio.adapters.read_from_file(str(out))
    sources, results = back.tracks[0].find_clips(), back.tracks[1].find_clips()
    assert len(results) == len(sources) == 4
    for before, placed in zip(sources, results):
        seen = before.transformed_time_range(before.trimmed_range(), back.tracks)
        landed = placed.transformed_time_range(placed.trimmed_range(), back.tracks)
        assert same_span(landed, seen)
        if suffix == ".edl":  # record time: the hour is in the track time, as the CMX writer reads it back
            assert seen.start_time.to_seconds() >= hours * 3600
