"""Edit a range of a video file: the one call the CLI and the server's workers make.

The clip is streamed, so memory does not grow with its length: the anchor
frames are read first (random access) and edited together, then the range is
decoded in order, non-anchor frames are edited batch by batch, and every
edited frame (anchors at their places) goes straight to the encoder. Frames
are resized to the model's working size (longer side ``long_side``, aspect
kept, sides multiples of what the model accepts) and the results back to the
source size. Noise is drawn per source frame index (see ``fairy.noise``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Literal

import numpy as np

from fairy_proto.v1.settings import SettingError, check_settings, setting

from .errors import InvalidInputError, MediaError, OutputExistsError

Phase = Literal["decoding", "anchors", "frames", "encoding"]


@dataclasses.dataclass(frozen=True)
class EditSettings:
    """What to do to the frames. Names, defaults and ranges: ``fairy_proto.v1.settings`` (the paper's values).

    The guidance scales and ``long_side`` left as None are the model's own (``fairy_model.json``: its
    working size and recommended guidance; the table's fallbacks for a model that says nothing), filled in
    by :meth:`for_model` when the edit starts.
    """

    instruction: str
    steps: int = setting("steps").default
    seed: int = setting("seed").default
    anchors: int = setting("anchors").default
    guidance_scale: float | None = setting("guidance_scale").default
    image_guidance_scale: float | None = setting("image_guidance_scale").default
    long_side: int | None = setting("long_side").default
    batch_size: int = setting("batch_size").default
    noise: Literal["per_frame", "shared"] = setting("noise").default
    codec: Literal["h264", "prores"] = setting("codec").default

    def check(self) -> None:
        """InvalidInputError naming the setting and its range when one is outside the table's."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "instruction"}
        try:
            check_settings(values)
        except SettingError as exc:
            raise InvalidInputError(str(exc)) from None

    def for_model(self, model_defaults: dict) -> "EditSettings":
        """These settings with every one left unset taken from ``model_defaults`` (``pipe.model_defaults``)."""
        unset = {name: value for name, value in model_defaults.items() if getattr(self, name) is None}
        return dataclasses.replace(self, **unset)

    def params(self):
        """The pipeline's per-edit parameters (``FairyParams``) from these settings (after :meth:`for_model`)."""
        from .pipeline import FairyParams  # torch: imported only by whoever edits

        if self.guidance_scale is None or self.image_guidance_scale is None:
            raise ValueError("the guidance is unset: call for_model(pipe.model_defaults) first")
        return FairyParams(self.steps, self.guidance_scale, self.image_guidance_scale, self.seed, self.noise)


@dataclasses.dataclass
class EditProgress:
    """One progress report. ``anchor_previews`` is set once, when the anchor pass ends."""

    phase: Phase
    step: int
    total_steps: int
    frames_done: int
    total_frames: int
    anchor_previews: dict[int, np.ndarray] | None = None  # frame index in the range -> HxWx3 uint8


@dataclasses.dataclass(frozen=True)
class EditResult:
    output: pathlib.Path
    frame_count: int
    fps: Fraction
    width: int
    height: int
    anchor_indices: tuple[int, ...]
    seconds: float


def edit_video(
    pipe,
    source: str | pathlib.Path,
    output: str | pathlib.Path,
    settings: EditSettings,
    *,
    start: int = 0,
    frames: int | None = None,
    overwrite: bool = False,
    on_progress: Callable[[EditProgress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    overlap_io: bool = True,
) -> EditResult:
    """Edit frames [start, start + frames) of ``source`` into ``output`` (``frames=None``: to the end).

    ``overlap_io``: decode ahead and encode behind in threads of their own (``fairy.video.background``),
    while the model works; the output is the same byte for byte either way.

    Raises InvalidInputError / MediaError / OutputExistsError before any work
    for bad input, EditCancelled when ``should_cancel()`` turns true (checked
    before every denoising step). ``output`` appears only when complete
    (written beside it under a temporary name, then renamed); on any failure
    nothing is left behind. torch.cuda.OutOfMemoryError propagates unchanged so
    the caller may retry with a smaller ``settings.batch_size``.
    """
    from . import video
    from .pipeline import anchor_indices_for

    began = time.perf_counter()
    # 1. Check inputs (nothing is read or written before this passes)
    source, output = pathlib.Path(source), pathlib.Path(output)
    info, frames = check_edit_inputs(source, output, settings, start=start, frames=frames, overwrite=overwrite)
    settings = settings.for_model(pipe.model_defaults)
    width, height = video.model_size(info.width, info.height, settings.long_side, pipe.size_multiple)
    params = settings.params()
    report = on_progress or (lambda progress: None)

    def relay(progress) -> None:
        report(EditProgress(progress.phase, progress.step, progress.total_steps, progress.frames_done, frames))

    # 2. Encode the instruction
    prompt_embeds = pipe.encode_instruction(settings.instruction, params)

    # 3. Anchor pass
    anchors = anchor_indices_for(frames, settings.anchors)
    anchor_edits: dict[int, np.ndarray] = {}
    cache = None
    if anchors:
        report(EditProgress("decoding", 0, settings.steps, 0, frames))
        sources = video.read_frames(source, [start + a for a in anchors])
        batch = video.resize_frames(np.stack([sources[start + a] for a in anchors]), (width, height))
        edited, cache = pipe.edit_anchors(
            batch, [start + a for a in anchors], prompt_embeds, params, total_frames=frames,
            callback=relay, should_cancel=should_cancel, output_type="uint8",
        )  # fmt: skip
        anchor_edits = dict(zip(anchors, edited))
        report(EditProgress("anchors", settings.steps, settings.steps, len(anchors), frames, dict(anchor_edits)))

    # 4. Frame pass, streamed from the decoder to the encoder
    audio = (source, float(start / info.fps), float(frames / info.fps)) if info.has_audio else None
    with video.VideoWriter(
        output, fps=info.fps, width=info.width, height=info.height, codec=settings.codec,
        audio_source=audio, overwrite=overwrite, expected_frames=frames,
    ) as writer:  # fmt: skip

        def encode(edited_batch: np.ndarray) -> None:  # back at the source's size
            for frame in video.resize_frames(edited_batch, (info.width, info.height)):
                writer.write(frame)

        decoded = video.iter_frames(source, start, frames)
        with contextlib.ExitStack() as background:
            if overlap_io:
                decoded = background.enter_context(contextlib.closing(video.prefetched(decoded)))
                encode = background.enter_context(video.BackgroundWrites(encode)).put
            pending: list[tuple[int, np.ndarray | None]] = []
            done = len(anchors)

            def flush() -> int:
                if not pending:
                    return 0
                todo = [(i, f) for i, f in pending if f is not None]
                edited = {}
                if todo:
                    batch = video.resize_frames(np.stack([f for _, f in todo]), (width, height))
                    out = pipe.edit_frames(
                        batch, [start + i for i, _ in todo], prompt_embeds, params, cache,
                        frames_done=done, total_frames=frames, callback=relay, should_cancel=should_cancel,
                        output_type="uint8",
                    )  # fmt: skip
                    edited = dict(zip((i for i, _ in todo), out))
                encode(np.stack([anchor_edits[i] if i in anchor_edits else edited[i] for i, _ in pending]))
                pending.clear()
                return len(todo)

            for offset, frame in enumerate(decoded):
                pending.append((offset, None if offset in anchor_edits else frame))
                if sum(f is not None for _, f in pending) >= settings.batch_size:
                    done += flush()
            done += flush()
        report(EditProgress("encoding", settings.steps, settings.steps, frames, frames))

    return EditResult(
        output=output, frame_count=frames, fps=info.fps, width=info.width, height=info.height,
        anchor_indices=tuple(start + a for a in anchors), seconds=time.perf_counter() - began,
    )  # fmt: skip


def check_edit_inputs(
    source: pathlib.Path,
    output: pathlib.Path,
    settings: EditSettings,
    *,
    start: int,
    frames: int | None,
    overwrite: bool,
):
    """Validate an edit before any work; returns the source's VideoInfo and the frame count."""
    from . import video

    if not settings.instruction or not settings.instruction.strip():
        raise InvalidInputError("the instruction is empty: say what the edit should do, e.g. -i 'make it a watercolor painting'")
    settings.check()
    if not source.exists():
        raise MediaError(f"input file not found: {source}")
    if not source.is_file():
        raise MediaError(f"input is not a file: {source}")
    if not os.access(source, os.R_OK):
        raise MediaError(f"input file is not readable: {source}")
    if output.resolve() == source.resolve() or (output.exists() and os.path.samefile(output, source)):
        raise OutputExistsError(f"the output {output} is the input itself; originals are never overwritten")
    if output.exists() and not overwrite:
        raise OutputExistsError(f"output file already exists: {output} (pass --overwrite to replace it)")
    if not output.parent.is_dir():
        raise MediaError(f"output folder does not exist: {output.parent}")
    if start < 0:
        raise InvalidInputError(f"start frame must be 0 or more, got {start}")
    if frames is not None and frames <= 0:
        raise InvalidInputError("zero frames to edit: --frames must be 1 or more" if frames == 0 else f"frame count must be positive, got {frames}")
    info = video.probe(source)
    if start >= info.frame_count:
        raise InvalidInputError(f"start frame {start} is past the end of {source.name}, which has {info.frame_count} frames")
    if frames is None:
        frames = info.frame_count - start
    if start + frames > info.frame_count:
        raise InvalidInputError(
            f"frames {start}..{start + frames - 1} run past the end of {source.name}, which has {info.frame_count} "
            f"frames (0..{info.frame_count - 1})"
        )
    return info, frames
