"""One edit in parts that different workers (GPUs, processes, machines) can run: the anchor pass, chunks of
frames, and the assembly of the output.

Fairy's frames depend only on the anchor cache, their own pixels and (seed, frame index), so once the anchor
pass is done the rest of a clip splits freely. The parts meet in a work folder::

    work/edit.json                 what the edit is (SplitEdit), written by the anchor pass
    work/anchors.npz               the edited anchor frames, at the model's working size
    work/cache.safetensors         the anchor cache (AnchorCache.save), for workers that load it
    work/chunk-000004-000012.npy   the edited non-anchor frames of clip offsets [4, 12), in order

Every file appears atomically, so a part is done exactly when its file exists: a part that was interrupted
is simply run again, and a finished one is never rerun. Chunks hold whole frame batches (``batch_size``
non-anchor frames each, in clip order), so their batches are the ones ``edit_video`` makes and the assembled
output is bitwise the one a single ``edit_video`` call writes.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from collections.abc import Callable
from fractions import Fraction

import numpy as np
from fairy_proto.files import atomic_path, atomic_write

from .editing import EditProgress, EditResult, EditSettings, check_edit_inputs
from .errors import InvalidInputError

__all__ = ["SplitEdit", "AnchorPass", "run_anchor_pass", "load_split", "load_cache", "recompute_cache",
           "chunk_ranges", "run_chunk", "finished_chunks", "assemble", "chunk_path"]

EDIT_FILE, ANCHORS_FILE, CACHE_FILE = "edit.json", "anchors.npz", "cache.safetensors"


@dataclasses.dataclass(frozen=True)
class SplitEdit:
    """An edit whose anchor pass is done: enough for any worker to edit a chunk or assemble the output."""

    source: str
    start: int  # first source frame
    frames: int  # frames in the edit
    settings: EditSettings
    fps: Fraction
    width: int  # the source's size (the output's)
    height: int
    model_width: int  # the size frames are edited at
    model_height: int
    anchors: tuple[int, ...]  # anchor offsets in the edit (0 .. frames - 1)
    has_audio: bool
    # What the anchor pass cost and left behind, for a worker choosing between loading the cache and
    # recomputing it (the defaults read edit.json files written before these were recorded).
    anchor_seconds: float = 0.0
    cache_bytes: int = 0

    def to_json(self) -> str:
        fields = dataclasses.asdict(self)
        fields["fps"] = f"{self.fps.numerator}/{self.fps.denominator}"
        return json.dumps(fields, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SplitEdit":
        fields = json.loads(text)
        fields["fps"] = Fraction(fields["fps"])
        fields["settings"] = EditSettings(**fields["settings"])
        fields["anchors"] = tuple(fields["anchors"])
        return cls(**fields)


@dataclasses.dataclass(frozen=True)
class AnchorPass:
    """What the anchor pass made: the edit, its edited anchors (offset -> frame) and the cache in memory
    (None without anchors), so the worker that ran it need not load the cache back."""

    edit: SplitEdit
    previews: dict[int, np.ndarray]
    cache: object | None


def run_anchor_pass(pipe, source, settings: EditSettings, work_dir, *, start: int = 0, frames: int | None = None,
                    on_progress: Callable[[EditProgress], None] | None = None,
                    should_cancel: Callable[[], bool] | None = None) -> AnchorPass:
    """The first part: check the inputs, edit the anchors together, and write edit.json, anchors.npz and
    the anchor cache into ``work_dir``."""
    from . import video
    from .pipeline import anchor_indices_for

    source, work_dir = pathlib.Path(source), pathlib.Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    # The output is checked when it is assembled; a name in the work folder stands in for it here.
    info, frames = check_edit_inputs(source, work_dir / "(output)", settings, start=start, frames=frames,
                                     overwrite=True)
    # Recorded resolved in edit.json, so every worker renders with the same values whatever model it loaded.
    settings = settings.for_model(pipe.model_defaults)
    width, height = video.model_size(info.width, info.height, settings.long_side, pipe.size_multiple)
    report = on_progress or (lambda progress: None)
    anchors = anchor_indices_for(frames, settings.anchors)
    began = time.perf_counter()
    edited = np.zeros((0, height, width, 3), np.uint8)
    cache = None
    if anchors:
        report(EditProgress("decoding", 0, settings.steps, 0, frames))

        def relay(progress) -> None:
            report(EditProgress(progress.phase, progress.step, progress.total_steps, progress.frames_done, frames))

        edited, cache = _edit_anchors(pipe, source, start, anchors, (width, height), settings, frames, relay,
                                      should_cancel)
    edit = SplitEdit(source=str(source), start=start, frames=frames, settings=settings, fps=info.fps,
                     width=info.width, height=info.height, model_width=width, model_height=height,
                     anchors=anchors, has_audio=info.has_audio, anchor_seconds=round(time.perf_counter() - began, 4),
                     cache_bytes=cache.nbytes if cache is not None else 0)
    if cache is not None:
        with atomic_path(work_dir / CACHE_FILE, overwrite=True) as temp:
            cache.save(temp)
    with atomic_write(work_dir / ANCHORS_FILE, overwrite=True) as out:
        np.savez(out, offsets=np.asarray(anchors, dtype=np.int64), frames=edited)
    # edit.json last: its existence says the whole anchor pass is done.
    with atomic_write(work_dir / EDIT_FILE, "w", overwrite=True, encoding="utf-8") as out:
        out.write(edit.to_json())
    previews = dict(zip(anchors, edited))
    report(EditProgress("anchors", settings.steps, settings.steps, len(anchors), frames, previews))
    return AnchorPass(edit, previews, cache)


def _edit_anchors(pipe, source, start, anchors, size, settings, frames, callback, should_cancel):
    from . import video

    params = settings.params()
    prompt_embeds = pipe.encode_instruction(settings.instruction, params)
    sources = video.read_frames(source, [start + a for a in anchors])
    batch = video.resize_frames(np.stack([sources[start + a] for a in anchors]), size)
    edited, cache = pipe.edit_anchors(
        batch, [start + a for a in anchors], prompt_embeds, params, total_frames=frames,
        callback=callback, should_cancel=should_cancel, output_type="uint8",
    )  # fmt: skip
    return np.asarray(edited), cache


def load_split(work_dir) -> SplitEdit | None:
    """The edit whose anchor pass wrote ``work_dir``, or None when it has not finished."""
    path = pathlib.Path(work_dir) / EDIT_FILE
    return SplitEdit.from_json(path.read_text(encoding="utf-8")) if path.is_file() else None


def load_cache(work_dir, device="cpu"):
    """The anchor cache the anchor pass saved (None for an edit without anchors)."""
    from .attention import AnchorCache

    path = pathlib.Path(work_dir) / CACHE_FILE
    return AnchorCache.load(path, device=device) if path.is_file() else None


def recompute_cache(pipe, edit: SplitEdit, *, should_cancel: Callable[[], bool] | None = None):
    """The anchor cache made again from the source on this worker: the anchor pass's own computation (same
    frames, seed and batch), for when that is quicker than shipping the saved cache here. None without
    anchors."""
    if not edit.anchors:
        return None
    _, cache = _edit_anchors(pipe, edit.source, edit.start, edit.anchors, (edit.model_width, edit.model_height),
                             edit.settings, edit.frames, None, should_cancel)
    return cache


def chunk_ranges(edit: SplitEdit, batches_per_chunk: int = 1) -> list[tuple[int, int]]:
    """The chunks of the edit as offset ranges [a, b) covering every frame after the anchor pass, each with
    ``batches_per_chunk`` whole batches of non-anchor frames (the last may have fewer)."""
    if batches_per_chunk < 1:
        raise InvalidInputError(f"batches_per_chunk must be 1 or more, got {batches_per_chunk}")
    per_chunk = batches_per_chunk * edit.settings.batch_size
    anchors = set(edit.anchors)
    ranges, begin, counted = [], 0, 0
    for offset in range(edit.frames):
        if offset in anchors:
            continue
        counted += 1
        if counted == per_chunk:
            ranges.append((begin, offset + 1))
            begin, counted = offset + 1, 0
    if counted:
        ranges.append((begin, edit.frames))
    return ranges


def chunk_path(work_dir, chunk: tuple[int, int]) -> pathlib.Path:
    return pathlib.Path(work_dir) / f"chunk-{chunk[0]:06d}-{chunk[1]:06d}.npy"


def finished_chunks(work_dir, chunks: list[tuple[int, int]]) -> set[tuple[int, int]]:
    return {c for c in chunks if chunk_path(work_dir, c).is_file()}


def run_chunk(pipe, edit: SplitEdit, work_dir, chunk: tuple[int, int], *, cache=None,
              frames_done: int = 0, on_progress: Callable[[EditProgress], None] | None = None,
              should_cancel: Callable[[], bool] | None = None) -> pathlib.Path:
    """Edit the non-anchor frames of offsets [a, b) with the anchor ``cache`` (``load_cache``; a worker
    loads it once per edit) and write them to their chunk file. ``frames_done``: the edit's frames finished
    before this chunk, for progress."""
    from . import video

    begin, end = chunk
    settings = edit.settings
    params = settings.params()
    report = on_progress or (lambda progress: None)

    def relay(progress) -> None:
        report(EditProgress(progress.phase, progress.step, progress.total_steps, progress.frames_done, edit.frames))

    prompt_embeds = pipe.encode_instruction(settings.instruction, params)
    anchors = set(edit.anchors)
    size = (edit.model_width, edit.model_height)
    todo = [(offset, frame) for offset, frame in enumerate(video.iter_frames(edit.source, edit.start + begin, end - begin),
                                                           start=begin) if offset not in anchors]
    edited = []
    for first in range(0, len(todo), settings.batch_size):
        batch = todo[first : first + settings.batch_size]
        out = pipe.edit_frames(
            video.resize_frames(np.stack([f for _, f in batch]), size), [edit.start + i for i, _ in batch],
            prompt_embeds, params, cache, frames_done=frames_done + first, total_frames=edit.frames,
            callback=relay, should_cancel=should_cancel, output_type="uint8",
        )  # fmt: skip
        edited.extend(np.asarray(out))
    frames = np.stack(edited) if edited else np.zeros((0, edit.model_height, edit.model_width, 3), np.uint8)
    path = chunk_path(work_dir, chunk)
    with atomic_write(path, overwrite=True) as out:
        np.save(out, frames)
    return path


def assemble(edit: SplitEdit, work_dir, output, *, overwrite: bool = False,
             on_progress: Callable[[EditProgress], None] | None = None) -> EditResult:
    """The last part: every frame in order (anchors from the anchor pass, the rest from the chunks), back
    at the source's size, encoded with the source's audio for the range. Raises InvalidInputError naming the
    first missing chunk when the chunks do not cover the edit."""
    from . import video

    began = time.perf_counter()
    work_dir, output = pathlib.Path(work_dir), pathlib.Path(output)
    with np.load(work_dir / ANCHORS_FILE) as data:
        anchor_frames = dict(zip(data["offsets"].tolist(), data["frames"]))
    chunks = sorted(_chunk_files(work_dir))
    cursor, covered = 0, []
    for begin, end in chunks:
        if begin != cursor:
            break
        covered.append((begin, end))
        cursor = end
    if cursor < edit.frames and not (set(range(cursor, edit.frames)) <= set(anchor_frames)):
        raise InvalidInputError(f"frames from offset {cursor} of the edit have no chunk in {work_dir}")
    report = on_progress or (lambda progress: None)
    settings = edit.settings
    audio = (edit.source, float(edit.start / edit.fps), float(edit.frames / edit.fps)) if edit.has_audio else None
    with video.VideoWriter(
        output, fps=edit.fps, width=edit.width, height=edit.height, codec=settings.codec, audio_source=audio,
        overwrite=overwrite, expected_frames=edit.frames,
    ) as writer:  # fmt: skip
        for begin, end in covered:
            rest = iter(np.load(chunk_path(work_dir, (begin, end)), mmap_mode="r"))
            pending = []
            for offset in range(begin, end):
                pending.append(anchor_frames[offset] if offset in anchor_frames else next(rest))
                if len(pending) == settings.batch_size or offset == end - 1:
                    for frame in video.resize_frames(np.stack(pending), (edit.width, edit.height)):
                        writer.write(frame)
                    pending = []
        for offset in range(cursor, edit.frames):  # trailing anchors after the last chunk
            writer.write(video.resize_frames(anchor_frames[offset][None], (edit.width, edit.height))[0])
        report(EditProgress("encoding", settings.steps, settings.steps, edit.frames, edit.frames))
    return EditResult(output=output, frame_count=edit.frames, fps=edit.fps, width=edit.width, height=edit.height,
                      anchor_indices=tuple(edit.start + a for a in edit.anchors),
                      seconds=time.perf_counter() - began)


def _chunk_files(work_dir: pathlib.Path) -> list[tuple[int, int]]:
    found = []
    for path in work_dir.glob("chunk-*.npy"):
        _, begin, end = path.stem.split("-")
        found.append((int(begin), int(end)))
    return found
