"""How well a model carries out the procedural edits, on photographs it never saw in training.

For every deterministic edit: the mean PSNR of the model's output against the
exact target, that of the unedited source (the bar to clear: 3 dB above it),
and how often the output is closer to its own edit's target than to any other
edit's target of the same source (the bar: 90 %). For the ambiguous edit: the
PSNR against the hue rotation that best explains the output (is it a hue
rotation at all?). And the autoencoder's reconstruction PSNR (the bar: 30 dB).

Everything is measured at the model's working size on crops of
``HELD_OUT_PHOTOS``, with the paper's settings (the settings table's defaults),
each image edited on its own (no anchors: these are stills).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import torch

from .data import HELD_OUT_PHOTOS, load_photo
from .edits import AMBIGUOUS_EDITS, DETERMINISTIC_EDITS, hue_rotation_angle, rotate_hue

__all__ = ["PSNR_MARGIN_DB", "ACCURACY_BAR", "AUTOENCODER_BAR_DB", "held_out_images", "psnr", "evaluate_edits", "write_scores"]

PSNR_MARGIN_DB = 3.0
ACCURACY_BAR = 0.9
AUTOENCODER_BAR_DB = 30.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two images in [0, 1] (any matching shape)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return 10 * np.log10(1.0 / max(mse, 1e-12))


def held_out_images(size: tuple[int, int], count_per_photo: int = 8, seed: int = 1234) -> np.ndarray:
    """``count_per_photo`` crops (a half to all of the photo, aspect of ``size``) of each held-out photo: N x H x W x 3 float."""
    width, height = size
    rng = np.random.default_rng(seed)
    crops = []
    for name in HELD_OUT_PHOTOS:
        photo = torch.from_numpy(load_photo(name).transpose(2, 0, 1))[None]
        ph, pw = photo.shape[-2:]
        for _ in range(count_per_photo):
            scale = rng.uniform(0.5, 1.0) * min(pw / width, ph / height)
            cw, ch = int(width * scale), int(height * scale)
            left, top = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
            window = photo[..., top : top + ch, left : left + cw]
            resized = torch.nn.functional.interpolate(window, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
            crops.append(resized[0].permute(1, 2, 0).clamp(0, 1).numpy())
    return np.stack(crops)


def evaluate_edits(model, *, size: tuple[int, int] | None = None, count_per_photo: int = 8, seed: int = 0, progress: bool = False,
                   guidance: dict | None = None) -> dict:
    """Scores of ``model`` (a FairyPipeline or anything ``load_pipeline`` takes); see the module doc.

    ``guidance``: the guidance scales to edit with (default: the paper's).
    """
    from ..loading import load_pipeline
    from .small_model import autoencoder_psnr

    pipe = load_pipeline(model, device="cpu") if isinstance(model, str) else model
    long_side = pipe.model_defaults["long_side"]
    size = size or (long_side, long_side * 3 // 4)
    sources = held_out_images(size, count_per_photo)
    frames = (sources * 255).round().astype(np.uint8)
    sources = frames.astype(np.float32) / 255  # what the model sees
    targets = {e.name: np.stack([e.apply(s) for s in sources]) for e in DETERMINISTIC_EDITS}

    def run(instruction: str) -> np.ndarray:
        out = pipe(frames, instruction, anchors=0, batch_size=len(frames), seed=seed, noise="per_frame", **(guidance or {}))
        return np.asarray(out.frames, dtype=np.float32)

    scores: dict = {"size": list(size), "images": len(frames), "photos": list(HELD_OUT_PHOTOS), "edits": {}, "guidance": dict(guidance or {})}
    scores["autoencoder_psnr"] = autoencoder_psnr(pipe.vae, list(sources))
    for edit in DETERMINISTIC_EDITS:
        outputs = run(edit.instruction)
        own = targets[edit.name]
        closest = []
        for i, output in enumerate(outputs):
            distances = {name: float(np.mean((output - t[i]) ** 2)) for name, t in targets.items()}
            closest.append(min(distances, key=distances.get) == edit.name)
        out_psnr = float(np.mean([psnr(o, t) for o, t in zip(outputs, own)]))
        src_psnr = float(np.mean([psnr(s, t) for s, t in zip(sources, own)]))
        accuracy = float(np.mean(closest))
        scores["edits"][edit.name] = {
            "instruction": edit.instruction, "instructions": list(edit.instructions), "psnr": out_psnr,
            "source_psnr": src_psnr, "gain_db": out_psnr - src_psnr, "accuracy": accuracy,
            "passes": out_psnr - src_psnr >= PSNR_MARGIN_DB and accuracy >= ACCURACY_BAR,
        }  # fmt: skip
        if progress:
            print(f"  {edit.name:10s} PSNR {out_psnr:5.2f} dB (source {src_psnr:5.2f}), closest to its own target "
                  f"{accuracy:.0%}", flush=True)  # fmt: skip
    for edit in AMBIGUOUS_EDITS:
        outputs = run(edit.instruction)
        # A gray output has no hue to measure: count it as no rotation.
        angles = [a if np.isfinite(a) else 0.0 for a in (hue_rotation_angle(s, o) for s, o in zip(sources, outputs))]
        fit = float(np.mean([psnr(o, rotate_hue(s, a)) for s, o, a in zip(sources, outputs, angles)]))
        unchanged = float(np.mean([psnr(o, s) for s, o in zip(sources, outputs)]))
        scores["edits"][edit.name] = {
            "instruction": edit.instruction, "instructions": list(edit.instructions), "ambiguous": True,
            "hue_rotation_psnr": fit, "psnr_to_source": unchanged, "angles": angles,
            "passes": fit >= unchanged + PSNR_MARGIN_DB,
        }  # fmt: skip
        if progress:
            print(f"  {edit.name:10s} PSNR to the best-fitting hue rotation {fit:5.2f} dB (to the source {unchanged:5.2f}); "
                  f"angles {[round(a) for a in angles]}", flush=True)  # fmt: skip
    return scores


def write_scores(folder: pathlib.Path, scores: dict, **extra) -> None:
    """Record ``scores`` and the edits that pass in the model folder's ``fairy_model.json``."""
    from ..model_info import read_model_info, write_model_info

    info = read_model_info(folder)
    info["evaluation"] = scores
    info["edits"] = [
        {"name": name, "instruction": s["instruction"], "instructions": s["instructions"]}
        for name, s in scores["edits"].items()
        if s["passes"]
    ]
    info.update(extra)
    write_model_info(folder, json.loads(json.dumps(info)))
