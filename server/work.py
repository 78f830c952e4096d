"""The job's work, as a plain function run inside a worker process.

``run_job`` renders one JobTask with an already-built pipeline cache and
reports through a ``JobReporter``; it knows nothing of gRPC or processes, so
tests call it directly. The result appears all at once: the job renders into
``<results>/.staging-<job_id>/`` and that folder is renamed to
``<results>/<job_id>/`` only when the video and its sidecar are complete.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import pathlib
import re
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from .jobs import EditPlan, JobState, Preview
from .messages import JobOutcome, JobTask
from .sidecar import write_sidecar

__all__ = ["JobReporter", "PipelineCache", "run_job", "run_task", "load_or_recompute_cache", "result_paths", "phase_fraction",
           "encode_preview"]

_log = logging.getLogger("fairy_server.work")

_PHASE_STATES = {
    "decoding": JobState.ANCHORS,
    "anchors": JobState.ANCHORS,
    "frames": JobState.FRAMES,
    "encoding": JobState.ENCODING,
}
# Share of the whole job each phase ends at (rough, for a progress bar).
_PHASE_SPAN = {"decoding": (0.0, 0.02), "anchors": (0.02, 0.25), "frames": (0.25, 0.95), "encoding": (0.95, 1.0)}
_PREVIEW_LONG_SIDE = 256


class JobReporter(Protocol):
    def phase(self, state: JobState) -> None: ...
    def progress(self, step: int, total_steps: int, frames_done: int, total_frames: int, fraction: float) -> None: ...
    def previews(self, previews: tuple[Preview, ...]) -> None: ...
    def batch_size(self, batch_size: int) -> None: ...


class PipelineCache:
    """Loaded pipelines by model id; the model is loaded once per worker and reused."""

    def __init__(self, load: Callable[[str], object], capacity: int = 2, on_evict: Callable[[], None] | None = None):
        self._load = load
        self._capacity = max(1, capacity)
        self._on_evict = on_evict
        self._pipes: OrderedDict[str, object] = OrderedDict()

    def __contains__(self, model: str) -> bool:
        return model in self._pipes

    def loaded(self) -> list[str]:
        return list(self._pipes)

    def get(self, model: str):
        if model in self._pipes:
            self._pipes.move_to_end(model)
            return self._pipes[model]
        while len(self._pipes) >= self._capacity:
            self._pipes.popitem(last=False)
            if self._on_evict:
                self._on_evict()
        pipe = self._load(model)
        self._pipes[model] = pipe
        return pipe


def result_paths(results_dir: pathlib.Path, job_id: str, plan: EditPlan) -> tuple[pathlib.Path, pathlib.Path]:
    """The published video and sidecar paths of a job."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", pathlib.Path(plan.source).stem).strip("._")[:60] or "clip"
    suffix = ".mov" if plan.codec == "prores" else ".mp4"
    folder = pathlib.Path(results_dir) / job_id
    return folder / f"{stem}_fairy{suffix}", folder / f"{stem}_fairy.otio"


def phase_fraction(phase: str, step: int, total_steps: int, frames_done: int, total_frames: int,
                   batch_frames: int = 1) -> float:
    """The job's overall fraction. In the frame pass a batch of ``batch_frames`` frames advances it step by
    step, so progress moves every denoising step rather than once a batch (seconds apart on a CPU)."""
    low, high = _PHASE_SPAN.get(phase, (0.0, 1.0))
    if phase == "frames" and total_frames > 0:
        within = frames_done / total_frames
        # At a batch's last step the pipeline already counts its frames as done.
        if 0 < step < total_steps and frames_done < total_frames:
            in_flight = min(max(1, batch_frames), total_frames - frames_done)
            within = min(1.0, within + (step / total_steps) * in_flight / total_frames)
    elif total_steps > 0:
        within = step / total_steps
    elif total_frames > 0:
        within = frames_done / total_frames
    else:
        within = 0.0
    return round(low + (high - low) * min(max(within, 0.0), 1.0), 4)


def encode_preview(frame_index: int, image) -> Preview:
    """A small JPEG of an HxWx3 uint8 frame."""
    from PIL import Image

    picture = Image.fromarray(image)
    picture.thumbnail((_PREVIEW_LONG_SIDE, _PREVIEW_LONG_SIDE))
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, format="JPEG", quality=80)
    return Preview(frame_index=frame_index, jpeg=buffer.getvalue(), width=picture.width, height=picture.height)


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError)


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_job(
    task: JobTask,
    pipelines: PipelineCache,
    reporter: JobReporter,
    *,
    should_cancel: Callable[[], bool] = lambda: False,
    edit_fn: Callable | None = None,
) -> JobOutcome:
    """Render ``task``; never raises for a job's own failure (the outcome says FAILED)."""
    from fairy.editing import EditProgress, EditSettings

    if edit_fn is None:
        from fairy.editing import edit_video as edit_fn

    plan = task.plan
    results_dir = pathlib.Path(task.results_dir)
    video, sidecar = result_paths(results_dir, task.job_id, plan)
    final_dir = video.parent
    staging = results_dir / f".staging-{task.job_id}"
    batch = max(1, task.batch_size)

    def failed(code: str, message: str) -> JobOutcome:
        return JobOutcome(JobState.FAILED, batch, error_message=message, error_code=code)

    if should_cancel():
        return JobOutcome(JobState.CANCELLED, batch)
    try:
        shutil.rmtree(staging, ignore_errors=True)  # left by a crashed attempt
        staging.mkdir(parents=True)
        reporter.phase(JobState.LOADING_MODEL)
        pipe = pipelines.get(plan.model)

        current = {"state": JobState.LOADING_MODEL}
        previews_sent = False

        def on_progress(p: EditProgress) -> None:
            nonlocal previews_sent
            state = _PHASE_STATES.get(p.phase, current["state"])
            if state != current["state"]:
                current["state"] = state
                reporter.phase(state)
            reporter.progress(
                p.step, p.total_steps, p.frames_done, p.total_frames,
                phase_fraction(p.phase, p.step, p.total_steps, p.frames_done, p.total_frames, batch),
            )
            if p.anchor_previews and not previews_sent:
                previews_sent = True
                reporter.previews(
                    tuple(encode_preview(plan.render_start + i, img) for i, img in sorted(p.anchor_previews.items()))
                )

        staged_video = staging / video.name
        render_started = time.perf_counter()
        while True:
            settings = EditSettings(plan.instruction, seed=plan.seed, batch_size=batch, **plan.parameters())
            try:
                edit_fn(
                    pipe,
                    plan.source,
                    staged_video,
                    settings,
                    start=plan.render_start,
                    frames=plan.render_count,
                    overwrite=True,
                    on_progress=on_progress,
                    should_cancel=should_cancel,
                )
                break
            except Exception as exc:
                if not _is_out_of_memory(exc):
                    raise
                _free_memory()
                if batch == 1:
                    _log.warning("job %s: out of memory with a frame batch of 1", task.job_id)
                    return failed(
                        "RESOURCE_EXHAUSTED",
                        "out of GPU memory even one frame at a time; try a smaller long side or another device",
                    )
                batch = max(1, batch // 2)
                _log.warning("job %s: out of memory; retrying with a frame batch of %d", task.job_id, batch)
                reporter.batch_size(batch)
                previews_sent = False
                if should_cancel():
                    return JobOutcome(JobState.CANCELLED, batch)

        render_seconds = time.perf_counter() - render_started
        write_sidecar(staging / sidecar.name, plan, task.job_id, video, server=task.server)
        # Publish: the finished folder replaces whatever an interrupted earlier attempt left.
        if final_dir.exists():
            shutil.rmtree(final_dir)
        staging.rename(final_dir)
        return JobOutcome(
            JobState.DONE, batch, result_path=str(video), sidecar_path=str(sidecar), result_size=video.stat().st_size,
            render_seconds=render_seconds,
        )
    except Exception as exc:  # the job's own failure, or a bug: the worker lives on either way
        return _outcome_of_error(exc, task, batch)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_or_recompute_cache(task: JobTask, edit, pipe, should_cancel: Callable[[], bool], *, ship: Callable | None = None,
                            bytes_per_second: float | None = None, where: str = "this machine"):
    """A worker's way to the anchor cache of a split job it did not run the anchor pass of: shipped (by
    default the saved file in the work folder; ``ship`` for another way, such as Ray's object store) unless
    running the anchor pass again is quicker (``splitting.choose_cache_route``); the choice is logged."""
    from fairy import chunked

    from .splitting import SAME_MACHINE_BYTES_PER_SECOND, choose_cache_route

    route = choose_cache_route(edit.cache_bytes, edit.anchor_seconds, bytes_per_second or SAME_MACHINE_BYTES_PER_SECOND,
                               where=where)
    _log.info("job %s: %s", task.job_id, route.describe())
    if not route.ship:
        return chunked.recompute_cache(pipe, edit, should_cancel=should_cancel)
    if ship is not None:
        return ship()
    return chunked.load_cache(task.work_dir, device=getattr(pipe, "device", "cpu"))


def run_task(task: JobTask, pipelines: PipelineCache, reporter: JobReporter, *,
             should_cancel: Callable[[], bool] = lambda: False, caches: dict | None = None,
             edit_fn: Callable | None = None, get_cache: Callable | None = None) -> JobOutcome:
    """Run a whole job (``run_job``) or one part of a split one; never raises for the job's own failure.
    ``caches``: the worker's anchor caches by job id (the worker that ran a job's anchor pass keeps its
    cache; another gets it once per job with ``get_cache(task, edit, pipe, should_cancel)``, by default
    ``load_or_recompute_cache``)."""
    if task.part == "whole":
        return run_job(task, pipelines, reporter, should_cancel=should_cancel, edit_fn=edit_fn)
    from fairy import chunked
    from fairy.editing import EditProgress, EditSettings

    plan, batch = task.plan, max(1, task.batch_size)
    work = pathlib.Path(task.work_dir)
    caches = caches if caches is not None else {}

    def failed(code: str, message: str) -> JobOutcome:
        return JobOutcome(JobState.FAILED, batch, error_message=message, error_code=code)

    def on_progress(p: EditProgress) -> None:
        reporter.progress(p.step, p.total_steps, p.frames_done, p.total_frames, 0.0)  # the manager sums the parts
        if p.anchor_previews:
            reporter.previews(
                tuple(encode_preview(plan.render_start + i, img) for i, img in sorted(p.anchor_previews.items())))

    if should_cancel():
        return JobOutcome(JobState.CANCELLED, batch)
    began = time.perf_counter()
    try:
        settings = EditSettings(plan.instruction, seed=plan.seed, batch_size=batch, **plan.parameters())
        if task.part == "anchors":
            reporter.phase(JobState.ANCHORS)
            anchor_pass = chunked.run_anchor_pass(pipelines.get(plan.model), plan.source, settings, work,
                                                  start=plan.render_start, frames=plan.render_count,
                                                  on_progress=on_progress, should_cancel=should_cancel)
            caches.clear()  # one job's cache at a time: they are large
            caches[task.job_id] = anchor_pass.cache
        elif task.part == "chunk":
            pipe = pipelines.get(plan.model)
            reporter.phase(JobState.FRAMES)
            edit = chunked.load_split(work)
            if task.job_id not in caches:
                caches.clear()
                caches[task.job_id] = (get_cache or load_or_recompute_cache)(task, edit, pipe, should_cancel)
            while True:
                try:
                    chunked.run_chunk(pipe, edit, work, task.chunk, cache=caches[task.job_id],
                                      on_progress=on_progress, should_cancel=should_cancel)
                    break
                except Exception as exc:
                    if not _is_out_of_memory(exc) or batch == 1:
                        raise
                    _free_memory()
                    batch = max(1, batch // 2)  # smaller batches inside this chunk: same frames within the bound
                    edit = dataclasses.replace(edit, settings=dataclasses.replace(edit.settings, batch_size=batch))
                    reporter.batch_size(batch)
        elif task.part == "assemble":
            reporter.phase(JobState.ENCODING)
            return _assemble(task, chunked.load_split(work), work, batch, began)
        else:
            return failed("INTERNAL", f"unknown part {task.part!r}")
        return JobOutcome(JobState.DONE, batch, render_seconds=time.perf_counter() - began)
    except Exception as exc:
        if _is_out_of_memory(exc):
            return failed("RESOURCE_EXHAUSTED", "out of GPU memory even one frame at a time; try a smaller long side")
        return _outcome_of_error(exc, task, batch)


def _outcome_of_error(exc: Exception, task: JobTask, batch: int) -> JobOutcome:
    """What a job (or part) that raised ends as: cancelled, refused input, a model that cannot load, or a bug."""
    from fairy import errors

    if isinstance(exc, errors.EditCancelled):
        return JobOutcome(JobState.CANCELLED, batch)
    if isinstance(exc, (errors.InvalidInputError, errors.MediaError)):
        code, message = "INVALID_ARGUMENT", str(exc)
    elif isinstance(exc, errors.ModelLoadError):
        code, message = "FAILED_PRECONDITION", str(exc)
    else:
        _log.exception("job %s: %s failed", task.job_id, task.part if task.part != "whole" else "render")
        code, message = "INTERNAL", f"internal error in the worker: {exc.__class__.__name__}: {exc}"[:500]
    return JobOutcome(JobState.FAILED, batch, error_message=message, error_code=code)


def _assemble(task: JobTask, edit, work: pathlib.Path, batch: int, began: float) -> JobOutcome:
    """The last part: the output and its sidecar, published like a whole job's."""
    from fairy import chunked

    plan = task.plan
    results_dir = pathlib.Path(task.results_dir)
    video, sidecar = result_paths(results_dir, task.job_id, plan)
    staging = results_dir / f".staging-{task.job_id}"
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        chunked.assemble(edit, work, staging / video.name, overwrite=True)
        write_sidecar(staging / sidecar.name, plan, task.job_id, video, server=task.server)
        if video.parent.exists():
            shutil.rmtree(video.parent)
        staging.rename(video.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return JobOutcome(JobState.DONE, batch, result_path=str(video), sidecar_path=str(sidecar),
                      result_size=video.stat().st_size, render_seconds=time.perf_counter() - began)
