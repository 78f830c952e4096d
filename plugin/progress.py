"""A tiny text progress display for many jobs: one bar per job and an overall one.

On a terminal the block of bars is redrawn in place; elsewhere (a log, a pipe,
Resolve's console) a line is written when a job changes state, and otherwise
at most every ``log_interval`` seconds while it makes progress, so logs stay
short but a long job never looks stuck. No dependency beyond the standard library (the plugin core runs in
editors' own Python, where tqdm may not exist).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from .runner import JobUpdate

__all__ = ["ProgressBoard", "bar"]


def bar(fraction: float, width: int = 20) -> str:
    fraction = max(0.0, min(1.0, fraction))
    filled = int(round(fraction * width))
    return "[" + "#" * filled + "-" * (width - filled) + f"] {fraction * 100:3.0f}%"


class ProgressBoard:
    """Feed it JobUpdates (``update``); it draws on ``stream`` (stderr by default)."""

    def __init__(self, labels: dict[str, str], *, stream: TextIO | None = None, live: bool | None = None,
                 width: int = 20, log_interval: float = 3.0, clock: Callable[[], float] = time.monotonic):
        self._labels = dict(labels)          # job id -> what the user knows the job by
        self._stream = stream or sys.stderr
        self._live = live if live is not None else bool(getattr(self._stream, "isatty", lambda: False)())
        self._width = width
        self._state: dict[str, JobUpdate] = {}
        self._drawn_lines = 0
        self._log_interval = log_interval
        self._clock = clock
        self._logged: dict[str, tuple[float, float]] = {}  # job id -> (when, fraction) of its last log line
        self._label_width = min(36, max([len("overall")] + [len(v) for v in self._labels.values()]))

    def _job_line(self, job_id: str) -> str:
        update = self._state.get(job_id)
        label = self._labels[job_id][: self._label_width].ljust(self._label_width)
        if update is None:
            return f"{label} {bar(0.0, self._width)} WAITING"
        detail = f" {update.message}" if update.state == "FAILED" and update.message else ""
        return f"{label} {bar(update.fraction, self._width)} {update.state}{detail}"

    def _overall_line(self) -> str:
        total = len(self._labels)
        fractions = [self._state[j].fraction if j in self._state else 0.0 for j in self._labels]
        finished = sum(1 for u in self._state.values() if u.final)
        overall = sum(fractions) / total if total else 1.0
        return f"{'overall'.ljust(self._label_width)} {bar(overall, self._width)} {finished}/{total} finished"

    def update(self, updates: list[JobUpdate]) -> None:
        changed = []
        now = self._clock()
        for update in updates:
            if update.job_id not in self._labels:
                continue
            previous = self._state.get(update.job_id)
            self._state[update.job_id] = update
            when, fraction = self._logged.get(update.job_id, (now, 0.0))
            if previous is None or previous.state != update.state:
                changed.append(update.job_id)
            elif update.fraction != fraction and now - when >= self._log_interval:
                changed.append(update.job_id)
        if self._live:
            self._redraw()
        else:
            for job_id in dict.fromkeys(changed):
                self._stream.write(self._job_line(job_id) + "\n")
                self._logged[job_id] = (now, self._state[job_id].fraction)
            if changed:
                self._stream.write(self._overall_line() + "\n")
            self._stream.flush()

    def _redraw(self) -> None:
        lines = [self._job_line(job_id) for job_id in self._labels] + [self._overall_line()]
        out = []
        if self._drawn_lines:
            out.append(f"\x1b[{self._drawn_lines}F")  # back to the first line of the block
        out.extend(line + "\x1b[K\n" for line in lines)
        self._stream.write("".join(out))
        self._stream.flush()
        self._drawn_lines = len(lines)

    def message(self, text: str) -> None:
        """A line above the bars (a warning, a skipped clip)."""
        if self._live and self._drawn_lines:
            self._stream.write(f"\x1b[{self._drawn_lines}F\x1b[J")
            self._drawn_lines = 0
            self._stream.write(text + "\n")
            self._redraw()
        else:
            self._stream.write(text + "\n")
            self._stream.flush()
