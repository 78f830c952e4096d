"""Decoding ahead and encoding behind in threads (fairy.video.background): the same file byte for byte,
errors reach the caller, and leaving early stops both threads and writes nothing."""

from __future__ import annotations

import hashlib
import threading
import time
from fractions import Fraction

import numpy as np
import pytest

from fairy.editing import EditSettings, edit_video
from fairy.errors import EditCancelled
from fairy.video import BackgroundWrites, make_test_clip, prefetched


def _threads(name: str) -> int:
    return sum(t.name == name for t in threading.enumerate())


def test_prefetched_keeps_order_and_raises_the_producers_error():
    assert list(prefetched(range(50), depth=3)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("corrupt packet")

    with pytest.raises(ValueError, match="corrupt packet"):
        list(prefetched(failing()))
    assert _threads("fairy-decode") == 0


def test_leaving_a_prefetch_early_stops_its_thread():
    produced = []

    def endless():
        for i in range(10**9):
            produced.append(i)
            yield i

    items = prefetched(endless(), depth=2)
    assert next(items) == 0
    items.close()
    assert _threads("fairy-decode") == 0
    assert len(produced) <= 5  # it stopped a few items ahead, not at the end


def test_background_writes_keep_order_raise_errors_and_drop_on_failure():
    written = []
    with BackgroundWrites(written.append, depth=2) as writes:
        for i in range(20):
            writes.put(i)
    assert written == list(range(20)) and _threads("fairy-encode") == 0

    def broken(item):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        with BackgroundWrites(broken) as writes:
            writes.put(1)
            time.sleep(0.05)
            writes.put(2)

    slow = []
    with pytest.raises(RuntimeError, match="cancelled"):
        with BackgroundWrites(lambda item: (time.sleep(0.02), slow.append(item)), depth=4) as writes:
            for i in range(4):
                writes.put(i)
            raise RuntimeError("cancelled")
    assert len(slow) < 4 and _threads("fairy-encode") == 0  # what was still queued was dropped


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_test_clip(tmp_path_factory.mktemp("media") / "clip.mp4", frames=9, width=80, height=60, fps=Fraction(24))


def test_the_edit_is_the_same_file_with_and_without_threads(tiny_pipe, clip, tmp_path):
    settings = EditSettings("make it snow", steps=2, long_side=64, batch_size=2)
    digests = []
    for overlap in (False, True):
        out = tmp_path / f"overlap-{overlap}.mp4"
        edit_video(tiny_pipe, clip, out, settings, overlap_io=overlap)
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_a_cancel_with_threads_leaves_no_file_and_no_thread(tiny_pipe, clip, tmp_path):
    calls = []

    def cancel_in_the_frame_pass() -> bool:
        calls.append(1)
        return len(calls) > 4  # past the anchor pass (2 steps), inside the frames

    out = tmp_path / "cancelled.mp4"
    with pytest.raises(EditCancelled):
        edit_video(tiny_pipe, clip, out, EditSettings("make it snow", steps=2, long_side=64, batch_size=2),
                   should_cancel=cancel_in_the_frame_pass)
    assert not out.exists() and not list(tmp_path.iterdir())
    assert _threads("fairy-decode") == 0 and _threads("fairy-encode") == 0
