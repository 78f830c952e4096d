"""The DaVinci Resolve script against a fake Resolve (documented calls only, fake_resolve.py) and the
session's real ``fairy-server`` (tiny model, CPU, one worker).

The fake's media pool items point at real clips in the server's media root, with the frame counts and
rates of those files (the server checks the rate and that the range lies inside the media). What the
server was asked is read back from the server (ListJobs, by the ``item`` label: the fake's item ids are
unique in a test run). A job that must fail asks the server to run out of memory (``live.OOM``).
"""

from __future__ import annotations

import io
import os
import pathlib
from fractions import Fraction

import pytest
from fairy_proto.v1 import fairy_pb2

import fake_resolve as fr
from fairy_plugin.client import FairyClient
from fairy_plugin.errors import PluginError, SelectionError
from fairy_plugin.requests import EditParams
from fairy_plugin.resolve import cli as resolve_cli
from fairy_plugin.resolve.edit import edit_timeline, marker_record
from real_server import closed_port

# Every call the script may make, as named in Resolve's scripting README.
DOCUMENTED = {
    "GetProjectManager", "GetCurrentProject", "GetCurrentTimeline", "GetMediaPool",
    "GetCurrentVideoItem", "GetSelectedClips", "GetItemListInTrack", "GetTrackCount", "AddTrack",
    "GetStartFrame", "GetSetting", "GetMarkInOut", "GetName",
    "GetStart", "GetEnd", "GetDuration", "GetLeftOffset", "GetRightOffset", "GetSourceStartFrame",
    "GetMediaPoolItem", "GetTrackTypeAndIndex", "GetUniqueId", "AddMarker",
    "AddTake", "GetTakesCount", "SelectTakeByIndex", "FinalizeTake",
    "GetClipProperty", "ImportMedia", "AppendToTimeline",
}


# The media: (frames, rate). a.mov and b.mov have frames to spare after the used range (handles).
MEDIA = {"a.mov": (64, 24), "b.mov": (56, 25), "x.mov": (24, 24)}
# The server's cheapest settings: these tests are about where results land, not how they look.
CHEAP = dict(steps=1, anchors=1, long_side=16)


@pytest.fixture(scope="module")
def media(fairy_server):
    """Real clips in the session server's media root, one per media pool item of the scene."""
    from fairy.video import make_test_clip

    folder = fairy_server.media_root / "resolve"
    folder.mkdir(exist_ok=True)
    return {name: make_test_clip(folder / name, frames=frames, width=64, height=48, fps=Fraction(fps), audio=False)
            for name, (frames, fps) in MEDIA.items()}


@pytest.fixture
def scene(live, media, tmp_path):
    """A 24 fps timeline starting at 01:00:00:00 (frame 86400):
    V1: A (24 fps media, frames 10-57 of 64) then B (25 fps media, 0-49 of 56) then a title;
    V2: X over the first half of A, so A's result must go higher."""
    rec = fr.Recorder()
    timeline = fr.Timeline(rec, fps="24", start_frame=86400, video_tracks=2)
    pool = {name: fr.MediaPoolItem(rec, str(media[name]), str(fps), frames) for name, (frames, fps) in MEDIA.items()}
    # Offsets are in timeline frames: A has 10 media frames before its range and 6 after; B's 6 media frames
    # after are 5.76 timeline frames, 5 whole ones.
    a = timeline.add_item(1, "a.mov", pool["a.mov"], 86400, 48, 10, 10, 6)
    b = timeline.add_item(1, "b.mov", pool["b.mov"], 86448, 48, 0, 0, 5)
    title = timeline.add_item(1, "Title", None, 86600, 24, 0, 0, 0)
    x = timeline.add_item(2, "x.mov", pool["x.mov"], 86400, 24, 0, 0, 0)
    resolve = fr.Resolve(timeline)
    # Results are rendered at their source's rate; Resolve reads it from the file.
    resolve.project.media_pool.import_fps = "24"
    return dict(resolve=resolve, timeline=timeline, rec=rec, a=a, b=b, title=title, x=x, tmp=tmp_path, media=media,
                live=live)


def _jobs(scene) -> dict[str, fairy_pb2.Job]:
    """The server's jobs for the scene's items, by their ``clip`` label ("V1 a.mov")."""
    items = {item.uid for track in scene["timeline"].tracks for item in track}
    jobs = scene["live"].stub.ListJobs(fairy_pb2.ListJobsRequest(limit=1000), timeout=30).jobs
    mine = [j for j in jobs if j.request.labels.get("item") in items]
    assert len({j.request.labels["clip"] for j in mine}) == len(mine)
    return {j.request.labels["clip"]: j for j in mine}


def _job_ids(live) -> set[str]:
    return {j.job_id for j in live.stub.ListJobs(fairy_pb2.ListJobsRequest(limit=1000), timeout=30).jobs}


def _fps_by_name(pool):
    def import_media(items, _original=pool.ImportMedia):
        created = _original(items)
        for item in created:
            if "b.mov" in item._name:
                item._props["FPS"] = "25"
        return created
    pool.ImportMedia = import_media


def _edit(scene, **kwargs):
    params = kwargs.pop("params", EditParams(instruction="make it snowy", seed=9, **CHEAP))
    with FairyClient(scene["live"].address, connect_timeout=5) as client:
        return edit_timeline(scene["resolve"], params, client=client, media_dir=scene["tmp"] / "renders",
                             stream=io.StringIO(), **kwargs)


def test_selected_clips_land_on_free_tracks_above_at_the_same_record_frame(scene):
    timeline, rec = scene["timeline"], scene["rec"]
    _fps_by_name(scene["resolve"].project.media_pool)
    timeline.selected = [scene["a"], scene["b"]]
    summary = _edit(scene, mode="selected", handles=4)
    assert summary.failed == [] and summary.skipped == [] and summary.warnings == []

    # What the server was asked: media frames at the media's own rate, handles where they exist.
    jobs = _jobs(scene)
    assert set(jobs) == {"V1 a.mov", "V1 b.mov"}
    assert {j.state for j in jobs.values()} == {fairy_pb2.JOB_STATE_DONE}
    ra, rb = jobs["V1 a.mov"].request, jobs["V1 b.mov"].request
    assert (ra.range.start_frame, ra.range.frame_count, ra.range.rate.num, ra.range.rate.den) == (10, 48, 24, 1)
    assert (ra.handles.before, ra.handles.after) == (4, 4)
    assert (rb.range.start_frame, rb.range.frame_count, rb.range.rate.num) == (0, 50, 25)  # 48 tl frames of 25p
    assert (rb.handles.before, rb.handles.after) == (0, 4)
    assert ra.source.path == str(scene["media"]["a.mov"]) and ra.instruction == "make it snowy"

    # Imported into the media pool: the downloaded renders.
    imported = [args[0] for args in rec.named("ImportMedia")]
    assert len(imported) == 2 and all(len(paths) == 1 for paths in imported)
    assert all(pathlib.Path(p[0]).parent == scene["tmp"] / "renders" and os.path.isfile(p[0]) for p in imported)

    # Placed with AppendToTimeline: A over V2's clip goes to a new V3, B to the free V2.
    infos = [args[0][0] for args in rec.named("AppendToTimeline")]
    by_record = {i["recordFrame"]: i for i in infos}
    assert by_record[86400]["trackIndex"] == 3 and by_record[86448]["trackIndex"] == 2
    assert (by_record[86400]["startFrame"], by_record[86400]["endFrame"]) == (4, 51)   # skip 4 handle frames
    assert (by_record[86448]["startFrame"], by_record[86448]["endFrame"]) == (0, 49)
    assert {i["mediaType"] for i in infos} == {1}
    assert rec.named("AddTrack") == [("video", None)]
    assert len(timeline.tracks) == 3

    # The new items cover exactly their sources, each with a marker carrying the instruction.
    new_a, new_b = timeline.tracks[2][0], timeline.tracks[1][1]
    assert (new_a.start, new_a.duration) == (86400, 48) and (new_b.start, new_b.duration) == (86448, 48)
    for new, request in ((new_a, ra), (new_b, rb)):
        (frame, marker), = new.markers.items()
        assert frame == new.source_start
        assert marker["name"] == "Fairy: make it snowy" and marker["color"] == "Purple"
        assert marker["note"].startswith("make it snowy (seed 9")
        # The custom data is metadata["fairy"]'s one layout, as JSON.
        record = marker_record(marker)
        assert record.job_id == request.job_id and record.seed == 9 and record.instruction == "make it snowy"
        assert (record.source.start_frame, record.source.frame_count) == (request.range.start_frame,
                                                                          request.range.frame_count)
        assert record.source.media == request.source.path and record.server == scene["live"].address

    # The sources are untouched.
    assert (scene["a"].start, scene["a"].duration, scene["a"].media_item.GetClipProperty("File Path")) == \
        (86400, 48, str(scene["media"]["a.mov"]))
    assert scene["a"].markers == {} and scene["a"].takes == []
    assert timeline.tracks[0] == [scene["a"], scene["b"], scene["title"]]
    # Only documented calls were made.
    assert {method for _, method, _ in rec.calls} <= DOCUMENTED


def test_a_misplaced_result_is_reported(scene):
    pool = scene["resolve"].project.media_pool

    def append_one_frame_late(clipInfos, _original=pool.AppendToTimeline):
        return _original([dict(info, recordFrame=info["recordFrame"] + 1) for info in clipInfos])

    pool.AppendToTimeline = append_one_frame_late
    scene["timeline"].current_item = scene["a"]
    summary = _edit(scene, mode="current")
    assert summary.warnings == ["V1 a.mov: the result landed at 86401+48, not 86400+48"]


def test_current_clip(scene):
    scene["timeline"].current_item = scene["b"]
    summary = _edit(scene, mode="current")
    assert [label for label, _ in summary.placed] == ["V1 b.mov"]
    assert list(_jobs(scene)) == ["V1 b.mov"]


def test_marks_pick_every_clip_between_in_and_out_on_the_track(scene):
    timeline = scene["timeline"]
    timeline.marks = {"video": {"in": 40, "out": 60}, "audio": {"in": 40, "out": 60}}  # 86440..86460
    with pytest.raises(SelectionError, match="no clip on V2 between mark in and mark out"):
        _edit(scene, mode="marks", track=2)  # X ends at 86424
    with pytest.raises(SelectionError, match="track V5 does not exist"):
        _edit(scene, mode="marks", track=5)
    summary = _edit(scene, mode="marks", track=1)
    assert sorted(label for label, _ in summary.placed) == ["V1 a.mov", "V1 b.mov"]
    timeline.marks = {}
    with pytest.raises(SelectionError, match="set the timeline's mark in and mark out first"):
        _edit(scene, mode="marks", track=1)


def test_take_mode_adds_and_selects_a_take(scene):
    rec = scene["rec"]
    scene["timeline"].current_item = scene["a"]
    summary = _edit(scene, mode="current", as_take=True, handles=2)
    assert summary.failed == []
    (media_item, start, end), = rec.named("AddTake")
    assert (start, end) == (2, 49) and media_item.GetClipProperty("File Path").endswith(".mp4")
    assert rec.named("SelectTakeByIndex") == [(2,)]
    assert rec.named("FinalizeTake") == [] and rec.named("AppendToTimeline") == []
    a = scene["a"]
    assert a.selected_take == 2 and len(a.takes) == 2
    assert a.takes[0]["mediaPoolItem"].GetClipProperty("File Path") == str(scene["media"]["a.mov"])
    assert list(a.markers) == [2]


def test_take_mode_finalized(scene):
    scene["timeline"].current_item = scene["a"]
    _edit(scene, mode="current", as_take=True, finalize_take=True)
    assert scene["rec"].named("FinalizeTake") == [()]
    assert scene["a"].finalized and scene["a"].media_item.GetClipProperty("File Path").endswith(".mp4")


def test_non_media_items_are_skipped_and_failures_place_nothing(scene):
    scene["timeline"].selected = [scene["title"], scene["a"]]
    # Out of memory at every batch size: the job fails with the server's own message.
    summary = _edit(scene, mode="selected", params=EditParams(f"make it snowy {scene['live'].OOM}", seed=9, **CHEAP))
    assert summary.skipped == ["V1 Title is not a media clip (a title, generator or compound clip)"]
    (job,) = _jobs(scene).values()
    assert job.state == fairy_pb2.JOB_STATE_FAILED and job.error_message
    assert summary.failed == [f"V1 a.mov: failed: {job.error_message}"]
    assert summary.placed == []
    assert scene["rec"].named("ImportMedia") == [] and scene["rec"].named("AppendToTimeline") == []


def test_nothing_open_is_a_clear_message(live, tmp_path):
    before = _job_ids(live)
    with FairyClient(live.address) as client:
        with pytest.raises(PluginError, match="no timeline is open in DaVinci Resolve"):
            edit_timeline(fr.Resolve(None), EditParams("x"), client=client, media_dir=tmp_path)
        resolve = fr.Resolve(fr.Timeline(fr.Recorder()))
        with pytest.raises(SelectionError, match="no video clip under the playhead"):
            edit_timeline(resolve, EditParams("x"), client=client, media_dir=tmp_path, mode="current")
    assert _job_ids(live) == before  # nothing was submitted


def test_external_command(scene):
    scene["timeline"].selected = [scene["a"]]
    err = io.StringIO()
    cheap = [f"--{name.replace('_', '-')}={value}" for name, value in CHEAP.items()]
    rc = resolve_cli.main(["edit", "-i", "make it snowy", "--selected", "--server", scene["live"].address,
                           "--media-dir", str(scene["tmp"] / "r"), *cheap], resolve=scene["resolve"], stderr=err)
    assert rc == 0, err.getvalue()
    assert "placed V1 a.mov" in err.getvalue() and "overall" in err.getvalue()
    job = _jobs(scene)["V1 a.mov"]
    assert job.state == fairy_pb2.JOB_STATE_DONE and job.request.parameters.long_side == CHEAP["long_side"]
    err = io.StringIO()
    with closed_port() as nobody:  # the open timeline is looked for before the server
        rc = resolve_cli.main(["edit", "-i", "x", "--current", "--server", nobody],
                              resolve=fr.Resolve(None), stderr=err)
    assert rc == 1
    assert err.getvalue() == "fairy resolve: no timeline is open in DaVinci Resolve; open one on the Edit page\n"


def test_workspace_script_runs_inside_resolve(scene, monkeypatch, capsys, tmp_path):
    target = resolve_cli.install_script(tmp_path / "Scripts" / "Edit")
    text = target.read_text()
    assert "FAIRY_PLUGIN_PATH = ''" not in text and "FAIRY_PLUGIN_PATH = '/" in text
    namespace = {"__name__": "fairy_edit_test", "resolve": scene["resolve"]}  # Resolve provides `resolve`
    exec(compile(text, str(target), "exec"), namespace)
    monkeypatch.setenv("FAIRY_INSTRUCTION", "make it snowy")
    monkeypatch.setenv("FAIRY_SERVER", scene["live"].address)
    monkeypatch.setenv("FAIRY_MEDIA_DIR", str(tmp_path / "renders"))
    for name, value in CHEAP.items():  # one variable per setting
        monkeypatch.setenv(f"FAIRY_{name.upper()}", str(value))
    scene["timeline"].current_item = scene["b"]
    namespace["run"]()
    out = capsys.readouterr().out
    assert "Fairy Edit: placed V1 b.mov" in out
    assert len(scene["timeline"].tracks[1]) == 2  # x and b's result on V2
    assert _jobs(scene)["V1 b.mov"].request.parameters.steps == CHEAP["steps"]
