"""The text progress board: a bar per job and an overall one."""

from __future__ import annotations

import io

from fairy_proto.v1 import fairy_pb2

from fairy_plugin.progress import ProgressBoard, bar
from fairy_plugin.runner import JobUpdate


def _update(job_id, state, fraction, message=""):
    return JobUpdate(job_id=job_id, key=job_id, state=state, fraction=fraction, message=message, previews=[],
                     result_path=None, job=fairy_pb2.Job(job_id=job_id))


def test_bar():
    assert bar(0.5, 10) == "[#####-----]  50%"
    assert bar(2, 4) == "[####] 100%" and bar(-1, 4) == "[----]   0%"


def test_log_mode_writes_a_line_per_state_change():
    out = io.StringIO()
    board = ProgressBoard({"a": "V1 shot", "b": "V1 other"}, stream=out, live=False, width=4)
    board.update([_update("a", "FRAMES", 0.5)])
    board.update([_update("a", "FRAMES", 0.6)])  # same state: no new line
    board.update([_update("a", "DONE", 1.0), _update("b", "FAILED", 0.2, "out of memory")])
    lines = out.getvalue().splitlines()
    assert lines == [
        "V1 shot  [##--]  50% FRAMES",
        "overall  [#---]  25% 0/2 finished",
        "V1 shot  [####] 100% DONE",
        "V1 other [#---]  20% FAILED out of memory",
        "overall  [##--]  60% 2/2 finished",
    ]


def test_log_mode_writes_progress_every_few_seconds_while_a_job_runs():
    out = io.StringIO()
    now = [0.0]
    board = ProgressBoard({"a": "shot"}, stream=out, live=False, width=4, log_interval=3.0, clock=lambda: now[0])
    board.update([_update("a", "FRAMES", 0.25)])  # new state: a line
    now[0] = 1.0
    board.update([_update("a", "FRAMES", 0.5)])  # too soon: none
    now[0] = 3.5
    board.update([_update("a", "FRAMES", 0.75)])  # 3.5 s since the last line and progress made: a line
    now[0] = 9.0
    board.update([_update("a", "FRAMES", 0.75)])  # no progress: none
    assert [line for line in out.getvalue().splitlines() if line.startswith("shot")] == [
        "shot    [#---]  25% FRAMES",
        "shot    [###-]  75% FRAMES",
    ]


def test_live_mode_redraws_the_block_in_place():
    out = io.StringIO()
    board = ProgressBoard({"a": "shot"}, stream=out, live=True, width=4)
    board.update([_update("a", "ANCHORS", 0.1)])
    board.update([_update("a", "FRAMES", 0.5)])
    text = out.getvalue()
    assert text.count("\x1b[2F") == 1  # the second draw moved up over the 2 lines of the first
    assert text.endswith("shot    [##--]  50% FRAMES\x1b[K\noverall [##--]  50% 0/1 finished\x1b[K\n")
    board.message("skipped V2 title")
    assert "skipped V2 title\n" in out.getvalue()
