"""One metadata["fairy"] layout, read back: `fairy timeline info` shows what was done, `fairy timeline redo`
renders a result again from what it recorded (here with another seed), against the session's real server."""

from __future__ import annotations

import io

import opentimelineio as otio
from fairy_proto.v1 import clip_metadata
from opentimelineio.opentime import RationalTime, TimeRange

from fairy_plugin.timeline import main
from otio_helpers import serialized_tracks


def _timeline(path, clip_path):
    timeline = otio.schema.Timeline(name="redo")
    track = otio.schema.Track(name="V1")
    track.append(otio.schema.Clip(
        name="shot", media_reference=otio.schema.ExternalReference(
            target_url=clip_path.resolve().as_uri(), available_range=TimeRange(RationalTime(0, 24), RationalTime(24, 24))),
        source_range=TimeRange(RationalTime(3, 24), RationalTime(4, 24))))
    timeline.tracks.append(track)
    otio.adapters.write_to_file(timeline, str(path))
    return path


def _run(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_info_and_redo_read_back_the_one_layout(live, tmp_path):
    from fairy_plugin.blender.jobs import strip_metadata

    cut = _timeline(tmp_path / "cut.otio", live.clip)
    edited, versions, again = tmp_path / "edited.otio", tmp_path / "versions.otio", tmp_path / "again.otio"
    # No settings given: every one is the server's default (this server's: 2 steps, 2 anchors, long side 64).
    code, _, err = _run("edit", str(cut), "-i", "make it snowy", "-o", str(edited), "--server", live.address)
    assert code == 0, err
    code, _, err = _run("edit", str(cut), "-i", "make it snowy", "-o", str(versions), "--server", live.address,
                        "--as-version", "--seed", "3")
    assert code == 0, err

    first = otio.adapters.read_from_file(str(edited))
    result = first.tracks[1].find_clips()[0]
    record = clip_metadata.read(result.metadata)
    assert record.settings["steps"] == 2 and record.settings["anchors"] == 2 and record.settings["long_side"] == 64
    assert record.settings["noise"] == "shared" and record.model == "builtin:tiny" and record.seed == 0
    assert (record.source.name, record.source.start_frame, record.source.frame_count) == ("shot", 3, 4)
    assert record.source.media == str(live.clip.resolve()) and record.server == live.address
    # A version (another media reference) and a Blender strip carry the same keys as a result clip.
    version_timeline = otio.adapters.read_from_file(str(versions))
    version_clip = version_timeline.tracks[0].find_clips()[0]
    version = version_clip.media_references()[version_clip.active_media_reference_key].metadata["fairy"]
    assert set(version) == set(result.metadata["fairy"]) == set(strip_metadata(record))
    assert clip_metadata.read({"fairy": version}).seed == 3

    code, shown, _ = _run("info", str(edited))
    assert code == 0 and "'make it snowy' from 'shot'" in shown and "seed 0" in shown and record.job_id in shown

    code, _, err = _run("redo", str(edited), "-o", str(again), "--seed", "5")
    assert code == 0, err
    before, after = otio.adapters.read_from_file(str(edited)), otio.adapters.read_from_file(str(again))
    assert serialized_tracks(after, keep=lambda t: t.name == "V1") == serialized_tracks(before, keep=lambda t: t.name == "V1")
    redone = after.tracks[1].find_clips()[0]
    new = clip_metadata.read(redone.metadata)
    assert new.seed == 5 and new.job_id != record.job_id
    assert new.settings == record.settings and new.source == record.source  # the rest as recorded
    assert redone.range_in_parent() == result.range_in_parent()
    assert redone.media_reference.target_url != result.media_reference.target_url

    # Redo of a version adds another version; a timeline without results is refused before any job.
    code, _, err = _run("redo", str(versions), "-o", str(tmp_path / "versions2.otio"), "--steps", "1")
    assert code == 0, err
    versions2 = otio.adapters.read_from_file(str(tmp_path / "versions2.otio"))
    clip = versions2.tracks[0].find_clips()[0]
    assert len(clip.media_references()) == 3 and clip.active_media_reference_key == "fairy-2"
    assert clip_metadata.read(clip.media_references()["fairy-2"].metadata).settings["steps"] == 1
    code, _, err = _run("redo", str(cut), "-o", str(tmp_path / "nothing.otio"), "--server", live.address)
    assert code == 2 and "no Fairy result" in err and not (tmp_path / "nothing.otio").exists()
