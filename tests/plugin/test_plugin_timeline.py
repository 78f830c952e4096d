"""`fairy timeline` against a real gRPC loopback server (scripted servicer)."""

from __future__ import annotations

import io
import pathlib
import signal
import subprocess
import sys
import time
import zipfile

import opentimelineio as otio
import pytest

from fairy_plugin.errors import SelectionError
from fairy_plugin.ranges import clip_timeline_range
from fairy_plugin.relink import is_result_track
from fairy_plugin.timeline import choose_clips, main
from otio_helpers import SAMPLES_DIR, same_span, serialized_tracks

SAMPLES = SAMPLES_DIR


def _run(args, address):
    err = io.StringIO()
    rc = main(list(args) + ["--server", address, "--connect-timeout", "5"], stderr=err)
    return rc, err.getvalue()


def _copy_with_media(sample: str, folder: pathlib.Path, *, missing: set[str] = frozenset()) -> pathlib.Path:
    """The sample with every clip pointing at a small file in ``folder``
    (except the ``missing`` ones, which get a MissingReference)."""
    timeline = otio.adapters.read_from_file(str(SAMPLES / sample))
    for i, clip in enumerate(timeline.find_clips()):
        if clip.name in missing:
            clip.media_reference = otio.schema.MissingReference()
            continue
        media = folder / f"media{i}.mov"
        media.write_bytes(b"m" * (100 + i))
        available = clip.media_reference.available_range if clip.media_reference else None
        clip.media_reference = otio.schema.ExternalReference(target_url=media.as_uri(), available_range=available)
    path = folder / sample
    otio.adapters.write_to_file(timeline, str(path))
    return path


def test_edit_every_clip_and_relink(scripted, tmp_path):
    inp = _copy_with_media("transition.otio", tmp_path)
    before = inp.read_bytes()
    out = tmp_path / "out.otio"
    rc, err = _run(["edit", str(inp), "-i", "make it snowy", "-o", str(out), "--seed", "5", "--steps", "3",
                    "--handles", "2"], scripted.address)
    assert rc == 0, err
    assert inp.read_bytes() == before  # the input is never touched
    original = otio.adapters.read_from_file(str(inp))
    result = otio.adapters.read_from_file(str(out))
    assert serialized_tracks(result, keep=lambda t: not is_result_track(t)) == serialized_tracks(original)
    assert [t.name for t in result.tracks] == ["", "Fairy 1"]
    sources = original.tracks[0].find_clips()
    results = result.tracks[1].find_clips()
    assert len(results) == len(sources) == 4
    for source, new in zip(sources, results):
        assert same_span(new.range_in_parent(), clip_timeline_range(source))
        assert new.metadata["fairy"]["source_clip"]["name"] == source.name
        assert new.metadata["fairy"]["seed"] == 5
        media = pathlib.Path(otio.url_utils.filepath_from_url(new.media_reference.target_url))
        assert media.parent == tmp_path / "out_fairy" and media.is_file()
    # What the server was asked: each clip's frames, handles where the media has them.
    requests = {r.labels["clip"]: r for r in scripted.servicer.submits}
    assert (requests["Clip-002"].range.start_frame, requests["Clip-002"].range.frame_count) == (2, 6)
    assert (requests["Clip-002"].handles.before, requests["Clip-002"].handles.after) == (2, 1)
    assert requests["Clip-004"].parameters.steps == 3
    # Progress: a bar per job and an overall one.
    assert "V1 Clip-003" in err and "overall" in err and "4/4 finished" in err
    assert "wrote" in err


def test_missing_media_is_reported_and_kept(scripted, tmp_path):
    inp = _copy_with_media("simple_cut.otio", tmp_path, missing={"Clip-002"})
    out = tmp_path / "out.otio"
    rc, err = _run(["edit", str(inp), "-i", "snow", "-o", str(out)], scripted.address)
    assert rc == 1  # written, but not everything was edited
    assert "skipped V1 Clip-002: clip 'Clip-002' has no media (missing media reference)" in err
    result = otio.adapters.read_from_file(str(out))
    assert [c.name for c in result.tracks[0].find_clips()] == ["Clip-001", "Clip-002", "Clip-003", "Clip-004"]
    assert isinstance(result.tracks[0].find_clips()[1].media_reference, otio.schema.MissingReference)
    assert len(result.tracks[1].find_clips()) == 3
    assert len(scripted.servicer.submits) == 3


def test_nested_and_retimed_clips(scripted, tmp_path):
    inp = _copy_with_media("nested_example.otio", tmp_path)
    out = tmp_path / "out.otio"
    rc, err = _run(["edit", str(inp), "-i", "snow", "-o", str(out)], scripted.address)
    assert rc == 1
    assert "skipped V1 Clip Inside A Stack 2: clip 'Clip Inside A Stack 2' is retimed by a LinearTimeWarp" in err
    assert "skipped V1 Clip Inside A Track" in err
    original = otio.adapters.read_from_file(str(inp))
    result = otio.adapters.read_from_file(str(out))
    assert serialized_tracks(result, keep=lambda t: not is_result_track(t)) == serialized_tracks(original)
    placed = {c.metadata["fairy"]["source_clip"]["name"]: c for c in result.tracks[1].find_clips()}
    assert len(placed) == 5
    for source in original.find_clips():
        if source.name in placed:
            assert same_span(placed[source.name].range_in_parent(), clip_timeline_range(source))


def test_as_version_adds_media_references(scripted, tmp_path):
    inp = _copy_with_media("simple_cut.otio", tmp_path)
    out = tmp_path / "out.otio"
    rc, err = _run(["edit", str(inp), "-i", "snow", "-o", str(out), "--as-version", "--clip", "Clip-003"],
                   scripted.address)
    assert rc == 0, err
    result = otio.adapters.read_from_file(str(out))
    assert len(result.tracks) == 1
    clips = {c.name: c for c in result.find_clips()}
    assert clips["Clip-003"].active_media_reference_key == "fairy"
    assert clips["Clip-003"].media_references()["DEFAULT_MEDIA"].target_url.endswith("media2.mov")
    assert clips["Clip-001"].active_media_reference_key == "DEFAULT_MEDIA"


def test_output_rules(scripted, tmp_path):
    inp = _copy_with_media("simple_cut.otio", tmp_path)
    out = tmp_path / "out.otio"
    out.write_text("keep me")
    rc, err = _run(["edit", str(inp), "-i", "snow", "-o", str(out)], scripted.address)
    assert rc == 2 and "exists; pass --overwrite" in err and out.read_text() == "keep me"
    rc, err = _run(["edit", str(inp), "-i", "snow", "-o", str(inp), "--overwrite"], scripted.address)
    assert rc == 2 and "is the input timeline" in err
    rc, err = _run(["edit", str(inp), "-i", "snow", "-o", str(tmp_path / "out.xyz")], scripted.address)
    assert rc == 1 and "no installed OTIO adapter writes '.xyz' files" in err
    rc, err = _run(["edit", str(inp), "-i", "  ", "-o", str(tmp_path / "o2.otio")], scripted.address)
    assert rc == 1 and "the instruction is empty" in err
    assert scripted.servicer.submits == []  # all refused before any job
    rc, err = _run(["edit", str(inp), "-i", "snow", "-o", str(out), "--overwrite", "--clip", "Clip-001"],
                   scripted.address)
    assert rc == 0, err
    assert otio.adapters.read_from_file(str(out)).tracks[1].find_clips()[0].name == "snow"
    assert not [p for p in tmp_path.iterdir() if ".fairy-" in p.name]  # no temp files left


def test_failed_jobs_write_nothing(scripted, tmp_path):
    scripted.servicer.fail_message = "out of GPU memory"
    inp = _copy_with_media("simple_cut.otio", tmp_path)
    out = tmp_path / "out.otio"
    rc, err = _run(["edit", str(inp), "-i", "snow", "-o", str(out), "--clip", "Clip-001"], scripted.address)
    assert rc == 1
    assert "not edited V1 Clip-001: failed: out of GPU memory" in err
    assert "nothing written" in err and not out.exists()


def test_upload_sends_media_for_a_remote_server(scripted, tmp_path):
    inp = _copy_with_media("simple_cut.otio", tmp_path)
    rc, err = _run(["edit", str(inp), "-i", "snow", "-o", str(tmp_path / "o.otio"), "--upload", "--clip", "Clip-001"],
                   scripted.address)
    assert rc == 0, err
    (request,) = scripted.servicer.submits
    assert request.source.upload_id in scripted.servicer.uploads
    assert scripted.servicer.uploads[request.source.upload_id] == (tmp_path / "media0.mov").read_bytes()


def test_server_not_running(tmp_path):
    inp = _copy_with_media("simple_cut.otio", tmp_path)
    err = io.StringIO()
    rc = main(["edit", str(inp), "-i", "snow", "-o", str(tmp_path / "o.otio"), "--server", "127.0.0.1:9",
               "--connect-timeout", "0.3"], stderr=err)
    assert rc == 1
    assert err.getvalue() == ("fairy timeline: Fairy server is not running at 127.0.0.1:9 "
                              "(start it with `fairy-server`)\n")


def test_ctrl_c_cancels_the_submitted_jobs(scripted, tmp_path):
    scripted.servicer.hold.set()
    inp = _copy_with_media("simple_cut.otio", tmp_path)
    out = tmp_path / "out.otio"
    code = ("import sys; from fairy_plugin.timeline import main; "
            f"sys.exit(main(['edit', {str(inp)!r}, '-i', 'snow', '-o', {str(out)!r}, '--server', {scripted.address!r}]))")
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while len([j for j in scripted.servicer.jobs.values() if j.state == 4]) < 4:  # all in FRAMES
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert sorted(scripted.servicer.cancels) == sorted(scripted.servicer.jobs)
    assert {j.state for j in scripted.servicer.jobs.values()} == {8}  # CANCELLED
    assert "cancelling 4 jobs" in err and not out.exists()


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


def test_other_adapters_by_suffix(scripted, tmp_path):
    """.otioz (a zip bundling the timeline with its media) is written by its own
    adapter, chosen from the output's suffix, and reads back."""
    inp = _copy_with_media("simple_cut.otio", tmp_path)
    out = tmp_path / "bundle.otioz"
    rc, err = _run(["edit", str(inp), "-i", "snow", "-o", str(out), "--clip", "Clip-002"], scripted.address)
    assert rc == 0, err
    with zipfile.ZipFile(out) as bundle:
        names = bundle.namelist()
    assert "content.otio" in names and any(n.startswith("media/") and n.endswith(".mp4") for n in names)
    (tmp_path / "unzipped").mkdir()
    back = otio.adapters.read_from_file(str(out), extract_to_directory=str(tmp_path / "unzipped"))
    (new,) = back.tracks[1].find_clips()
    assert new.metadata["fairy"]["source_clip"]["name"] == "Clip-002"


@pytest.mark.parametrize("suffix, out_suffix", [(".xml", ".xml"), (".edl", ".otio")])
def test_fcp_xml_and_edl_through_opentimelineio_plugins(scripted, tmp_path, suffix, out_suffix):
    """With opentimelineio-plugins installed (the test extra), FCP 7 XML and CMX 3600 EDL timelines are read,
    and the relinked timeline written in another format (an EDL holds a single video track)."""
    source = _copy_with_media("simple_cut.otio", tmp_path)
    inp = tmp_path / f"cut{suffix}"
    timeline = otio.adapters.read_from_file(str(source))
    for clip in timeline.find_clips():  # these formats need explicit source ranges
        clip.source_range = clip.trimmed_range()
    otio.adapters.write_to_file(timeline, str(inp))
    out = tmp_path / f"cut_snow{out_suffix}"
    rc, err = _run(["edit", str(inp), "-i", "snow", "-o", str(out), "--clip", "Clip-002"], scripted.address)
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
def test_timelines_starting_at_any_hour(scripted, tmp_path, hours, suffix):
    """An EDL whose record timecode starts at 01:00:00:00 (the usual case) or any other hour is read by the
    CMX reader as a track trimmed from -1 h; FCP XML carries the hour as the timeline's start. Every clip is
    editable either way, and its result lands over it at the same record time."""
    source = _copy_with_media("simple_cut.otio", tmp_path)
    timeline = otio.adapters.read_from_file(str(source))
    for clip in timeline.find_clips():
        clip.source_range = clip.trimmed_range()
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
    rc, err = _run(["edit", str(inp), "-i", "snow", "-o", str(out)], scripted.address)
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
