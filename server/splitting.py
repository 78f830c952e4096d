"""One job's parts across several workers: the anchor pass, chunks of frames, the assembly.

Plain bookkeeping, no processes: the job manager asks a :class:`SplitJob` for the next part a free worker
can take and tells it what became of each part it handed out. The parts meet in the job's work folder
(``<results>/.parts-<job_id>/``, see ``fairy.chunked``), where a finished part is a file: a job resumed
after a restart or a worker crash skips every part already there, so nothing complete is rendered twice.
"""

from __future__ import annotations

import collections
import dataclasses
import pathlib

from fairy import chunked

from .jobs import EditPlan

__all__ = ["Part", "SplitJob", "parts_folder", "CHUNK_BATCHES", "CacheRoute", "choose_cache_route",
           "SAME_MACHINE_BYTES_PER_SECOND"]

# Frame batches per chunk: small, so every worker stays busy to the end and a slower one takes fewer.
CHUNK_BATCHES = 1

# How fast a worker reads an anchor cache that lies on its own machine (the saved file in the page cache, or
# Ray's shared-memory object store): bench/bench_split.py measured 169 MiB in 6 ms (28 GB/s) on the
# development machine; a tenth of that, to stay on the safe side on slower disks.
SAME_MACHINE_BYTES_PER_SECOND = 2.5e9


@dataclasses.dataclass(frozen=True)
class CacheRoute:
    """How a worker gets the anchor cache of a job it has not run the anchor pass of: shipped (loaded from
    the work folder or Ray's object store) or recomputed (the anchor pass again, on this worker)."""

    ship: bool
    ship_seconds: float  # estimated: the cache's size over the bandwidth to it
    recompute_seconds: float  # measured: the anchor pass on the worker that ran it
    cache_bytes: int
    where: str  # "this machine" or "another node"

    def describe(self) -> str:
        size = f"{self.cache_bytes / 2**20:.1f} MiB"
        ship = f"shipping it from {self.where} (about {self.ship_seconds:.2f} s)"
        recompute = f"recomputing the anchor pass ({self.recompute_seconds:.2f} s when it ran)"
        return f"anchor cache of {size}: " + (f"{ship} beats {recompute}" if self.ship else f"{recompute} beats {ship}")


def choose_cache_route(cache_bytes: int, anchor_seconds: float, bytes_per_second: float, *,
                       where: str = "this machine") -> CacheRoute:
    """Ship the cache unless recomputing it is quicker. The recompute estimate is the anchor pass's own time
    on the worker that ran it (the devices of one server are alike); an edit recorded before the time was
    kept (``anchor_seconds`` 0) is shipped."""
    ship_seconds = cache_bytes / max(bytes_per_second, 1.0)
    ship = anchor_seconds <= 0 or ship_seconds <= anchor_seconds
    return CacheRoute(ship, round(ship_seconds, 4), round(anchor_seconds, 4), cache_bytes, where)


def parts_folder(results_dir: pathlib.Path, job_id: str) -> pathlib.Path:
    return pathlib.Path(results_dir) / f".parts-{job_id}"


@dataclasses.dataclass
class Part:
    kind: str  # "anchors", "chunk" or "assemble"
    chunk: tuple[int, int] | None = None
    deaths: int = 0  # workers that died running it


class SplitJob:
    """The parts of one running job: those waiting for a worker, those on one, and how far it got."""

    def __init__(self, job_id: str, seq: int, plan: EditPlan, work_dir: pathlib.Path):
        self.job_id, self.seq, self.plan = job_id, seq, plan
        self.work_dir = pathlib.Path(work_dir)
        self.pending: collections.deque[Part] = collections.deque()
        self.inflight: dict[int, Part] = {}  # task seq -> part
        self.inflight_frames: dict[int, int] = {}  # task seq -> frames of its chunk done so far
        self.anchors_done = False
        self.anchor_step = (0, 0)
        self.chunks_left = 0
        self.frames_done = 0  # of finished chunks, anchors included once their pass is done
        self.assembling = False
        if chunked.load_split(self.work_dir) is not None:
            self._after_anchors()  # resumed: the anchor pass and maybe some chunks are done
        else:
            self.pending.append(Part("anchors"))

    @property
    def resumed(self) -> bool:
        return self.anchors_done

    def next_part(self) -> Part | None:
        return self.pending.popleft() if self.pending else None

    def started(self, seq: int, part: Part) -> None:
        self.inflight[seq] = part

    def not_started(self, part: Part) -> None:
        self.pending.appendleft(part)

    def part_done(self, seq: int) -> bool:
        """A part finished; True when it was the assembly (the job is done)."""
        part = self.inflight.pop(seq)
        self.inflight_frames.pop(seq, None)
        if part.kind == "anchors":
            self._after_anchors()
        elif part.kind == "chunk":
            self.chunks_left -= 1
            self.frames_done += self._edited_frames(part.chunk)
            self._maybe_assemble()
        elif part.kind == "assemble":
            return True
        return False

    def part_lost(self, seq: int) -> Part:
        """The worker running a part died or stopped: the part waits for another worker."""
        part = self.inflight.pop(seq)
        self.inflight_frames.pop(seq, None)
        part.deaths += 1
        self.pending.appendleft(part)
        return part

    def cancel(self) -> None:
        self.pending.clear()

    def progress(self, seq: int, step: int, total_steps: int, frames_done: int) -> None:
        part = self.inflight.get(seq)
        if part is None:
            return
        if part.kind == "anchors":
            self.anchor_step = (step, total_steps)
        elif part.kind == "chunk":
            self.inflight_frames[seq] = frames_done

    def frames(self) -> int:
        """Frames of the job done: anchors, finished chunks, and what running chunks finished."""
        return self.frames_done + sum(self.inflight_frames.values())

    def fraction(self) -> float:
        total = max(1, self.plan.render_count)
        if self.assembling:
            return 0.95
        if not self.anchors_done:
            step, steps = self.anchor_step
            return round(0.02 + 0.23 * (step / steps if steps else 0.0), 4)
        return round(0.25 + 0.70 * min(1.0, self.frames() / total), 4)

    # -- internals -------------------------------------------------------------------

    def _after_anchors(self) -> None:
        self.anchors_done = True
        self._edit = chunked.load_split(self.work_dir)
        chunks = chunked.chunk_ranges(self._edit, CHUNK_BATCHES)
        finished = chunked.finished_chunks(self.work_dir, chunks)
        self.frames_done = len(self._edit.anchors)
        for chunk in chunks:
            if chunk in finished:
                self.frames_done += self._edited_frames(chunk)
            else:
                self.pending.append(Part("chunk", chunk))
        self.chunks_left = len(chunks) - len(finished)
        self._maybe_assemble()

    def _edited_frames(self, chunk: tuple[int, int]) -> int:
        """The frames a chunk edits: its offsets less the anchors among them (edited by the anchor pass)."""
        return (chunk[1] - chunk[0]) - sum(1 for a in self._edit.anchors if chunk[0] <= a < chunk[1])

    def _maybe_assemble(self) -> None:
        if self.chunks_left == 0 and not self.assembling:
            self.assembling = True
            self.pending.append(Part("assemble"))
