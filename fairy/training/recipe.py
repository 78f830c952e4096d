"""``fairy train-small``: the one command that reproduces the shipped small model.

Stages, each written to its own folder under ``--work-dir`` and skipped when
that folder is already complete (an interrupted stage resumes from its newest
checkpoint, so the recipe can be run across several sittings):

1. ``init``: fresh small components (``fairy.training.small_model``: an
   exact pixel-space autoencoder, a random UNet and text encoder), with the
   latent scale measured on procedural images;
2. ``base``: the editor trained from scratch on ``builtin:procedural`` with
   InstructPix2Pix's augmentation (crops and flips, no affine);
3. ``refine`` (only when ``refine_steps`` is set; the shipped recipe has none):
   ``base`` trained on for a second cosine cycle at a lower peak learning
   rate (a warm restart that reuses its weights instead of starting over);
4. ``equivariant``: ``refine`` (or ``base``) finetuned with Fairy's
   equivariant augmentation;
5. ``plain``: ``refine`` (or ``base``) finetuned for as long without it, the
   control for the quality benchmark's ablation;
6. ``anchored``: ``equivariant`` given anchored training
   (``fairy.training.anchored``: each example as 3 anchors and a frame through
   Fairy's two passes, so that its self-attention learns to read the anchors),
   still with the equivariant augmentation: the shipped model;
7. ``anchored-plain``: ``plain`` given the same anchored training without the
   augmentation: the ablation's control;
8. the shipped model is evaluated on the held-out photographs and copied to
   ``--output`` with its scores and the edits that pass in ``fairy_model.json``.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import sys
import time

import torch
from fairy_proto.files import atomic_path, atomic_write

__all__ = ["Recipe", "SHIPPED_RECIPE", "run_recipe"]


@dataclasses.dataclass(frozen=True)
class Recipe:
    seed: int = 0
    base_steps: int = 2000
    base_resolution: int = 64
    base_learning_rate: float = 6e-4
    refine_steps: int = 0  # 0: no second cycle; the finetunings start from base
    refine_learning_rate: float = 4e-4
    finetune_steps: int = 200
    finetune_resolution: int = 64
    finetune_learning_rate: float = 2e-4
    anchored_steps: int = 400
    anchored_learning_rate: float = 3e-4
    anchored_ambiguous_share: float = 0.5
    batch_size: int = 16
    eval_images_per_photo: int = 8


SHIPPED_RECIPE = Recipe()
# The model knows each of its edits exactly: guidance 1 (no extrapolation, one UNet branch instead of three)
# edits best; the paper's text scale 7.5 paints saturated blobs (measured: docs/model.md).
RECOMMENDED_GUIDANCE = {"guidance_scale": 1.0, "image_guidance_scale": 1.0}


def _log(message: str) -> None:
    print(f"[train-small {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _stage_init(folder: pathlib.Path, recipe: Recipe) -> None:
    from .data import ProceduralEdits
    from .small_model import LONG_SIDE, build_small_components, latent_scaling_factor
    from .trainer import save_model_folder

    components = build_small_components(recipe.seed)
    scale = latent_scaling_factor(components["vae"], ProceduralEdits(LONG_SIDE, seed=recipe.seed + 1))
    components["vae"].register_to_config(scaling_factor=scale)
    save_model_folder(components, folder, {"long_side": LONG_SIDE, "kind": "fairy-small"})


def _claim_work_dir(work_dir: pathlib.Path, recipe: Recipe) -> None:
    """Record the recipe in the work folder, or check it against the one recorded there: resuming another
    recipe's stages (another seed, say) would mix two runs into one model."""
    from ..errors import InvalidInputError

    record = work_dir / "recipe.json"
    if record.is_file():
        recorded = json.loads(record.read_text(encoding="utf-8"))
        changed = sorted(k for k, v in dataclasses.asdict(recipe).items() if recorded.get(k, v) != v)
        if changed:
            detail = ", ".join(f"{k} {recorded[k]} there, {getattr(recipe, k)} now" for k in changed)
            raise InvalidInputError(f"the work folder {work_dir} holds another recipe's stages ({detail}); "
                                    "give a new --work-dir (nothing was changed)")
        return
    if work_dir.is_dir() and any(work_dir.iterdir()) and recipe.seed != 0:
        # A folder from before recipes were recorded: those runs had seed 0 (the only one there was).
        raise InvalidInputError(f"the work folder {work_dir} holds stages of an unrecorded recipe (seed 0); "
                                f"give a new --work-dir for seed {recipe.seed} (nothing was changed)")
    work_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(record, "w", encoding="utf-8") as out:
        out.write(json.dumps(dataclasses.asdict(recipe), indent=1) + "\n")


def run_recipe(output: pathlib.Path, work_dir: pathlib.Path, recipe: Recipe = SHIPPED_RECIPE, *, progress: bool = True) -> dict:
    """Run every stage not yet done (see the module doc); returns the evaluation of the shipped model."""
    from ..errors import OutputExistsError
    from .anchored import AnchoredTraining
    from .evaluate import evaluate_edits, write_scores
    from .trainer import TrainConfig, checkpoint_dir_for, train

    if output.exists():
        raise OutputExistsError(f"the output folder {output} exists; pick a new one (nothing was written)")
    _claim_work_dir(work_dir, recipe)
    torch.manual_seed(recipe.seed)
    stages = {name: work_dir / name for name in ("init", "base", "refine", "equivariant", "plain", "anchored", "anchored-plain")}

    if not stages["init"].is_dir():
        _log("stage 1/8: fresh components")
        _stage_init(stages["init"], recipe)

    def editor(stage: str, base: str, *, steps, resolution, learning_rate, equivariant, warmup, schedule, seed,
               anchored=None, ambiguous_share=None) -> None:
        out = stages[stage]
        if out.is_dir():
            return
        config = TrainConfig(
            data="builtin:procedural", base=str(stages[base]), output=out, steps=steps,
            # An anchored example takes its anchors and a frame: a whole number of them.
            batch_size=max(anchored.group, recipe.batch_size // anchored.group * anchored.group) if anchored else recipe.batch_size,
            resolution=resolution, learning_rate=learning_rate, lr_schedule=schedule, warmup_steps=warmup,
            equivariant=equivariant, train_text_encoder=True, seed=seed, checkpoint_every=50,
            resume=checkpoint_dir_for(out).is_dir(), anchored=anchored, ambiguous_share=ambiguous_share,
        )  # fmt: skip
        train(config, progress=progress)

    _log("stage 2/8: the editor from scratch (no equivariant augmentation)")
    editor("base", "init", steps=recipe.base_steps, resolution=recipe.base_resolution,
           learning_rate=recipe.base_learning_rate, equivariant=False, warmup=50, schedule="cosine", seed=recipe.seed)  # fmt: skip
    start = "base"
    if recipe.refine_steps:
        _log("stage 3/8: a second cycle on the same data (no equivariant augmentation)")
        editor("refine", "base", steps=recipe.refine_steps, resolution=recipe.base_resolution,
               learning_rate=recipe.refine_learning_rate, equivariant=False, warmup=50, schedule="cosine", seed=recipe.seed + 2)  # fmt: skip
        start = "refine"
    _log("stage 4/8: equivariant finetuning")
    editor("equivariant", start, steps=recipe.finetune_steps, resolution=recipe.finetune_resolution,
           learning_rate=recipe.finetune_learning_rate, equivariant=True, warmup=0, schedule="cosine", seed=recipe.seed + 1)  # fmt: skip
    _log("stage 5/8: plain finetuning (the ablation's control)")
    editor("plain", start, steps=recipe.finetune_steps, resolution=recipe.finetune_resolution,
           learning_rate=recipe.finetune_learning_rate, equivariant=False, warmup=0, schedule="cosine", seed=recipe.seed + 1)  # fmt: skip

    anchored = AnchoredTraining()  # K: the edits' default number of anchors
    for stage, start, equivariant, number in (("anchored", "equivariant", True, 6), ("anchored-plain", "plain", False, 7)):
        _log(f"stage {number}/8: anchored training of {start!r}" + (" (the shipped model)" if stage == "anchored" else " (the control)"))
        editor(stage, start, steps=recipe.anchored_steps, resolution=recipe.finetune_resolution,
               learning_rate=recipe.anchored_learning_rate, equivariant=equivariant, warmup=0, schedule="cosine",
               seed=recipe.seed + 3, anchored=anchored, ambiguous_share=recipe.anchored_ambiguous_share)  # fmt: skip

    _log("stage 8/8: evaluation on the held-out photographs")
    scores = evaluate_edits(str(stages["anchored"]), count_per_photo=recipe.eval_images_per_photo, progress=progress,
                            guidance=RECOMMENDED_GUIDANCE)  # fmt: skip
    with atomic_path(output) as partial:  # a hidden folder beside output, renamed onto it when complete
        shutil.copytree(stages["anchored"], partial)
        write_scores(partial, scores, recipe=dataclasses.asdict(recipe), recommended=RECOMMENDED_GUIDANCE)
    _log(f"wrote {output}")
    return scores
