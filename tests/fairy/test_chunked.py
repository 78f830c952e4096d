"""An edit split into parts (fairy.chunked): the anchor pass on one worker, chunks on others in any order,
the assembly anywhere, gives bitwise the output of one edit_video call; a part is done exactly when its file
exists."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from fairy import chunked
from fairy.editing import EditSettings, edit_video
from fairy.errors import EditCancelled, InvalidInputError
from fairy.video import iter_frames, make_test_clip, probe


def _frames(path, count):
    return np.stack(list(iter_frames(path, 0, count)))


@pytest.mark.parametrize("anchors, batch_size, batches_per_chunk", [(3, 2, 1), (0, 3, 2), (2, 4, 1)])
def test_parts_in_any_order_on_two_workers_equal_one_edit(tiny_pipe, tmp_path, anchors, batch_size,
                                                         batches_per_chunk):
    from fairy.loading import load_pipeline

    clip = make_test_clip(tmp_path / "clip.mp4", frames=11, width=96, height=64, fps=Fraction(24000, 1001))
    settings = EditSettings("make it snow", steps=2, long_side=64, anchors=anchors, batch_size=batch_size, seed=4)
    single = edit_video(tiny_pipe, clip, tmp_path / "single.mp4", settings, start=0, frames=11)

    work = tmp_path / "work"
    anchor_pass = chunked.run_anchor_pass(tiny_pipe, clip, settings, work, start=0, frames=11)
    edit, previews = anchor_pass.edit, anchor_pass.previews
    assert sorted(previews) == list(edit.anchors) and len(edit.anchors) == anchors
    assert chunked.load_split(work) == edit
    assert edit.cache_bytes == (anchor_pass.cache.nbytes if anchors else 0) and (edit.anchor_seconds > 0 or not anchors)
    chunks = chunked.chunk_ranges(edit, batches_per_chunk)
    # Every frame in exactly one place: a chunk, or an anchor after the last chunk.
    covered = [i for a, b in chunks for i in range(a, b)]
    assert covered == list(range(len(covered))) and set(range(len(covered), 11)) <= set(edit.anchors)
    # A second worker: its own pipeline, the anchor cache recomputed there rather than loaded; the first
    # reads it from the work folder; chunks run out of order.
    other = load_pipeline("builtin:tiny", device="cpu")
    caches = {id(tiny_pipe): chunked.load_cache(work), id(other): chunked.recompute_cache(other, edit)}
    for n, chunk in enumerate(reversed(chunks)):
        worker = other if n % 2 else tiny_pipe
        chunked.run_chunk(worker, chunked.load_split(work), work, chunk, cache=caches[id(worker)])
    assert chunked.finished_chunks(work, chunks) == set(chunks)
    result = chunked.assemble(edit, work, tmp_path / "split.mp4")

    assert (result.frame_count, result.fps, result.anchor_indices) == (11, single.fps, single.anchor_indices)
    assert np.array_equal(_frames(single.output, 11), _frames(result.output, 11))
    assert probe(result.output).has_audio == probe(single.output).has_audio


def test_an_interrupted_chunk_leaves_no_file_and_a_gap_is_named(tiny_pipe, tmp_path):
    clip = make_test_clip(tmp_path / "clip.mp4", frames=8, width=96, height=64, fps=Fraction(24), audio=False)
    settings = EditSettings("make it snow", steps=2, long_side=64, anchors=1, batch_size=2)
    work = tmp_path / "work"
    edit = chunked.run_anchor_pass(tiny_pipe, clip, settings, work).edit
    chunks = chunked.chunk_ranges(edit)
    with pytest.raises(EditCancelled):
        chunked.run_chunk(tiny_pipe, edit, work, chunks[1], cache=chunked.load_cache(work),
                          should_cancel=lambda: True)
    assert chunked.finished_chunks(work, chunks) == set()
    assert not list(work.glob(".*"))  # no temporary left behind
    chunked.run_chunk(tiny_pipe, edit, work, chunks[0], cache=chunked.load_cache(work))
    with pytest.raises(InvalidInputError, match=f"offset {chunks[1][0]} of the edit have no chunk"):
        chunked.assemble(edit, work, tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()
    with pytest.raises(InvalidInputError, match="batches_per_chunk must be 1 or more"):
        chunked.chunk_ranges(edit, 0)
