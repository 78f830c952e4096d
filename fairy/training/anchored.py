"""Anchored training: each example trains as a tiny clip, through the two passes Fairy runs at inference.

Fairy's anchors work zero-shot on Stable Diffusion because its self-attention
finds the corresponding tokens of other frames and its values carry the
appearance the edit invented there. A small editor trained on single images
has no reason to learn either: measured on this project's small model, a frame
gave its anchors exactly their share of the keys whatever their content, and
K = 3 moved its pixels by 0.0003 (docs/method.md). So here each training
example becomes ``K`` anchors and one frame, crops of the same pair along a
straight path (a pan); the anchors are denoised together in the anchor pass
(writing an :class:`~fairy.attention.AnchorCache`) and the frame reads them in
the frame pass, as :class:`~fairy.pipeline.FairyPipeline` does. With
probability ``noisier_frame`` the frame is noised more than its anchors, so
that for an ambiguous edit (many right answers, one drawn per example) the
anchors are where the answer can be read: the frame's loss then pays for
finding, in the anchors, the tokens that match its own. And with probability
``other_answer`` an ambiguous example's frame starts from another right answer
(its noisy input is made from it, at its anchors' noise level) while its target
stays the anchors' answer: what happens at inference, where each frame's own
noise leans towards an answer of its own, and where the anchors must win.
Without this second part a frame learned to read its anchors only when its
own input said nothing, and K = 3 halved the spread of the ambiguous edit's
answer at best; with it, a fifth (docs/method.md).

This goes beyond the paper (whose base editor is trained on single images). It
keeps the frame's result a function of the anchor cache, its own pixels and
its noise, as inference does; only the training changes.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from fairy_proto.v1.settings import setting

from .augment import AffineRanges, apply_affine, resize_for_crops, sample_affine

__all__ = ["AnchoredTraining", "clip_views", "aligned_anchor_mean", "anchored_timesteps", "anchored_predictions", "anchored_loss",
           "consistency_loss"]


@dataclasses.dataclass(frozen=True)
class AnchoredTraining:
    """How anchored training draws its clips and noise levels.

    Attributes:
        anchors: ``K``, anchors per example (each example is ``K + 1`` images of the batch).
        noisier_frame: probability that the frame is noised more than its anchors (else as much).
        anchor_max_t: the anchors' timestep is drawn from ``[0, anchor_max_t * T)``.
        frame_min_t: a noisier frame's timestep is drawn from ``[max(anchors', frame_min_t * T), T)``.
        frame_loss_weight: the frame's loss counts this many times an anchor's.
        other_answer: probability that an ambiguous example's frame is noised from another right answer
            (its target stays the anchors' answer; anchors and frame at one level drawn from ``[0, T)``).
        consistency_weight: weight of the grain term: the frame's estimate of the clean latents is also
            pulled towards its anchors' (detached, moved into its place) where they overlap, so that what
            its own noise would make it invent it takes from the anchors (0: off).
        travel: how far the views' path may run, as a share of the crop (None: the 288/256 resize's margin).
    """

    anchors: int = setting("anchors").default  # train with as many anchors as an edit reads by default
    noisier_frame: float = 0.5
    anchor_max_t: float = 0.5
    frame_min_t: float = 0.8
    frame_loss_weight: float = 3.0
    other_answer: float = 0.7
    consistency_weight: float = 0.0
    travel: float | None = None

    def __post_init__(self) -> None:
        if self.anchors < 1:
            raise ValueError(f"anchored training needs at least 1 anchor per example, got {self.anchors}")
        for name in ("noisier_frame", "anchor_max_t", "frame_min_t", "other_answer"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"AnchoredTraining.{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.anchor_max_t <= 0:
            raise ValueError("AnchoredTraining.anchor_max_t must be above 0")
        if self.consistency_weight < 0:
            raise ValueError(f"AnchoredTraining.consistency_weight must be 0 or more, got {self.consistency_weight}")
        if self.travel is not None and not 0 <= self.travel <= 1:
            raise ValueError(f"AnchoredTraining.travel must lie in [0, 1], got {self.travel}")
        if self.frame_loss_weight <= 0:
            raise ValueError(f"AnchoredTraining.frame_loss_weight must be positive, got {self.frame_loss_weight}")

    @property
    def group(self) -> int:
        """Images of the batch one example takes: its anchors and its frame."""
        return self.anchors + 1


def clip_views(source: torch.Tensor, target: torch.Tensor, resolution: int, rng: np.random.Generator,
               count: int, *, equivariant: bool = False, ranges: AffineRanges = AffineRanges(),
               other: torch.Tensor | None = None, travel: float | None = None, grid: int = 1,
               with_offsets: bool = False) -> tuple[list, ...]:
    """``count`` square crops of a pair (``C x H x W`` each) along one straight path, one flip for all.

    Returns the source views and the target views, and with ``other`` (another
    answer for the same source) its views too, cropped alike; with
    ``with_offsets`` last a list of each view's ``(top, left)``: where its
    pixel ``(0, 0)`` lies in the (flipped, if flipped) resized pair, so that
    view ``a``'s pixel ``(y, x)`` shows what view ``b`` shows at
    ``(y + top_a - top_b, x + left_a - left_b)``.

    The pair is resized as :func:`~fairy.training.augment.augment_pair` resizes
    it (shorter side to ``resolution x 288/256``; with ``travel``, to
    ``resolution x (1 + travel)``), so the path moves by at most that margin: a
    short camera pan, the way InstructPix2Pix's own crops move. ``grid``: every
    offset a multiple of it (the VAE's downsampling factor keeps views' latents
    a whole number of latent pixels apart). ``equivariant``: the pair first
    gets one random affine transform (Fairy's equivariant augmentation, the
    same for the source and its edit and for every view). The views come back
    in random order, so that any position on the path can be an anchor.
    """
    images = torch.stack([source, target] + ([other] if other is not None else []))
    pair = resize_for_crops(images, resolution) if travel is None else resize_for_crops(images, resolution, 1 + travel)
    size = pair.shape[-2:]
    if equivariant:
        pair = apply_affine(pair, sample_affine(rng, ranges))
    room_y, room_x = size[0] - resolution, size[1] - resolution
    (y0, y1), (x0, x1) = rng.integers(0, room_y // grid + 1, 2) * grid, rng.integers(0, room_x // grid + 1, 2) * grid
    flip = rng.random() < 0.5
    if flip:
        pair = pair.flip(-1)
    views: tuple[list, ...] = tuple([] for _ in range(len(pair)))
    offsets = []
    for i in rng.permutation(count):
        along = i / max(count - 1, 1)
        top, left = (round((a + along * (b - a)) / grid) * grid for a, b in ((y0, y1), (x0, x1)))
        if flip:  # the same crop of the unflipped pair, seen in the flipped one
            left = room_x - left
        for image, out in zip(pair[..., top : top + resolution, left : left + resolution], views):
            out.append(image.clamp(0, 1))
        offsets.append((int(top), int(left)))
    return views + (offsets,) if with_offsets else views


def aligned_anchor_mean(anchor_predictions: torch.Tensor, anchor_offsets: list, frame_offset: tuple[int, int],
                        factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean of an example's anchors' predictions (``K x C x h x w`` latents) moved into its frame's place.

    Offsets are in pixels (:func:`clip_views`), multiples of the VAE's
    downsampling ``factor``. Returns the mean (``C x h x w``) and where at
    least one anchor covers the frame (``1 x h x w``, float).
    """
    _, channels, height, width = anchor_predictions.shape
    total = anchor_predictions.new_zeros(channels, height, width)
    count = anchor_predictions.new_zeros(1, height, width)
    for prediction, (top, left) in zip(anchor_predictions, anchor_offsets):
        dy, dx = (frame_offset[0] - top) // factor, (frame_offset[1] - left) // factor
        # frame latent (y, x) is anchor latent (y + dy, x + dx)
        ys, xs = slice(max(0, -dy), min(height, height - dy)), slice(max(0, -dx), min(width, width - dx))
        if ys.start >= ys.stop or xs.start >= xs.stop:
            continue
        total[:, ys, xs] += prediction[:, ys.start + dy : ys.stop + dy, xs.start + dx : xs.stop + dx]
        count[:, ys, xs] += 1
    return total / count.clamp(min=1), (count > 0).to(total.dtype)


def anchored_timesteps(examples: int, settings: AnchoredTraining, num_train_timesteps: int,
                       generator: torch.Generator, other_answer: torch.Tensor | None = None) -> torch.Tensor:
    """Timesteps for a batch laid out as every example's anchors, then every example's frame.

    ``other_answer``: which examples' frames start from another answer (bool,
    one per example); those get one level for their anchors and frame alike.
    """
    total = num_train_timesteps
    anchor_t = torch.randint(0, max(1, round(settings.anchor_max_t * total)), (examples,), generator=generator)
    lowest = torch.clamp(anchor_t, min=round(settings.frame_min_t * total))
    uniform = torch.rand(examples, generator=generator)
    noisier = lowest + (uniform * (total - lowest)).long()
    frame_t = torch.where(torch.rand(examples, generator=generator) < settings.noisier_frame,
                          noisier.clamp(max=total - 1), anchor_t)  # fmt: skip
    if other_answer is not None:
        level = torch.randint(0, total, (examples,), generator=generator)
        anchor_t = torch.where(other_answer, level, anchor_t)
        frame_t = torch.where(other_answer, level, frame_t)
    return torch.cat([anchor_t.repeat_interleave(settings.anchors), frame_t])


def anchored_predictions(unet, cache, model_input: torch.Tensor, timesteps: torch.Tensor,
                         text: torch.Tensor, examples: int, anchors: int) -> torch.Tensor:
    """The UNet's predictions for a batch laid out as :func:`anchored_timesteps` lays it out.

    The anchor pass: each example's ``anchors`` attend to one another and are
    written to ``cache`` (its store must be ``"hidden"`` or ``"kv"``; the
    tensors keep their graph, so the frame's loss trains the anchors' path
    too). The frame pass: each frame attends to itself and its own example's
    anchors. The cache is emptied afterwards.
    """
    split = examples * anchors
    try:
        cache.entries.clear()
        cache.set_pass("write", step=0, num_branches=examples)
        anchor_out = unet(model_input[:split], timesteps[:split], encoder_hidden_states=text[:split]).sample
        cache.set_pass("read", step=0, num_branches=examples)
        frame_out = unet(model_input[split:], timesteps[split:], encoder_hidden_states=text[split:]).sample
    finally:
        cache.entries.clear()
        cache.set_pass("off")
    return torch.cat([anchor_out, frame_out])


def anchored_loss(prediction: torch.Tensor, goal: torch.Tensor, examples: int, settings: AnchoredTraining) -> torch.Tensor:
    """MSE with each frame counted ``frame_loss_weight`` times an anchor."""
    per_image = (prediction.float() - goal.float()).pow(2).flatten(1).mean(1)
    weights = torch.ones_like(per_image)
    weights[examples * settings.anchors :] = settings.frame_loss_weight
    return (per_image * weights).sum() / weights.sum()


def consistency_loss(estimates: torch.Tensor, offsets: list, examples: int, anchors: int, factor: int,
                     frame_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared distance of each frame's clean-latent estimate to its anchors' (detached), where they overlap.

    ``estimates``: ``x0`` estimates laid out as :func:`anchored_timesteps` lays
    out the batch; ``offsets``: each image's ``(top, left)`` in pixels, the same
    layout. ``frame_weights``: one weight per example's frame (default 1).
    """
    split = examples * anchors
    anchor_estimates = estimates[:split].detach().float()
    total, covered = estimates.new_zeros((), dtype=torch.float32), estimates.new_zeros((), dtype=torch.float32)
    for i in range(examples):
        rows = slice(i * anchors, (i + 1) * anchors)
        mean, mask = aligned_anchor_mean(anchor_estimates[rows], offsets[rows], offsets[split + i], factor)
        weight = 1.0 if frame_weights is None else frame_weights[i].float()
        total = total + weight * ((estimates[split + i].float() - mean).pow(2) * mask).sum()
        covered = covered + mask.sum() * estimates.shape[1]
    return total / covered.clamp(min=1)
