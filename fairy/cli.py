"""The ``fairy`` command: ``fairy edit``, ``fairy train``, ``fairy train-small``, and the commands other
packages add through the ``fairy.commands`` entry point group (``fairy demo`` from the server package,
``fairy timeline`` from the plugin core), so that the library never imports the layers above it.

Every error the library raises on purpose is printed as one line
(``fairy: error: ...``) with exit status 2; Ctrl-C cancels cleanly (status 130)
and leaves no output file.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from fairy_proto.v1.settings import add_arguments, values_from_arguments

from . import DEFAULT_MODEL, __version__
from .errors import EditCancelled, FairyError

_EXIT_ERROR = 2
_EXIT_CANCELLED = 130


# The settings `fairy edit` takes, as named in the settings table (fairy_proto.v1.settings).
EDIT_SETTING_NAMES = ("model", "steps", "seed", "anchors", "guidance_scale", "image_guidance_scale", "long_side",
                      "codec", "noise", "batch_size")


def add_edit_options(parser: argparse.ArgumentParser, default_model: str, *, unset_means: str | None = None,
                     names: tuple[str, ...] = EDIT_SETTING_NAMES) -> None:
    """The instruction and the edit's settings, with the settings table's flags, defaults, ranges and help.
    ``unset_means``: leave settings unset (None) by default, for a server to fill in."""
    parser.add_argument("-i", "--instruction", required=True, help='what to do, e.g. "make it a watercolor painting"')
    add_arguments(parser, names, unset_means=unset_means, defaults={"model": default_model})
    if unset_means is not None:
        parser.set_defaults(model=default_model)
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: CUDA when available)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def build_parser(added: dict | None = None) -> argparse.ArgumentParser:
    """``added``: the ``fairy.commands`` entry points (default: looked up now)."""
    parser = argparse.ArgumentParser(prog="fairy", description="Instruction-guided video editing with Fairy.")
    parser.add_argument("--version", action="version", version=f"fairy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    edit = commands.add_parser("edit", help="edit a range of a video file")
    edit.add_argument("input", type=pathlib.Path, help="source video (never modified)")
    edit.add_argument("-o", "--output", type=pathlib.Path, required=True, help="edited video to write")
    edit.add_argument("--start", type=int, default=0, help="first frame (default 0)")
    edit.add_argument("--frames", type=int, help="number of frames (default: to the end)")
    add_edit_options(edit, DEFAULT_MODEL)
    edit.add_argument("--config", help="diffusers-format folder with the component configs of a single-file --model")

    for name, command in sorted((_added_commands() if added is None else added).items()):
        # Parsed by the command itself: only its name and one line of help are known here.
        commands.add_parser(name, help=(command.load().__doc__ or "").strip().splitlines()[0], add_help=False)

    train = commands.add_parser("train", help="train or finetune an editor (InstructPix2Pix loss, equivariant augmentation)")
    train.add_argument("--data", required=True, help="a triplet folder (metadata.jsonl; see docs/model.md) or builtin:procedural")
    train.add_argument("--base", required=True, help="hub id or diffusers folder to start from (8-channel editor, or 4-channel text-to-image)")
    train.add_argument("-o", "--output", type=pathlib.Path, required=True, help="the model folder to write (must not exist)")
    train.add_argument("--steps", type=int, default=1000)
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--resolution", type=int, help="square training crop (default: the base's working size, else 256)")
    train.add_argument("--learning-rate", type=float, default=1e-4)
    train.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant")
    train.add_argument("--warmup-steps", type=int, default=0)
    train.add_argument("--no-equivariant", dest="equivariant", action="store_false",
                       help="no random affine transform (crops and flips only), for comparisons")
    train.add_argument("--conditioning-dropout", type=float, default=0.05, help="probability of each of the three dropouts")
    train.add_argument("--train-text-encoder", action="store_true", help="train the text encoder too (frozen by default)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints (in OUTPUT-checkpoints/)")
    train.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), help="default: bf16 (or fp16) on CUDA, no on the CPU")
    train.add_argument("--device", help="cpu, cuda or cuda:N (default: CUDA when available)")
    train.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in OUTPUT-checkpoints/")
    train.add_argument("--anchors", type=int, default=0, metavar="K",
                       help="anchored training: each example as K anchors and a frame through Fairy's anchor and frame "
                            "passes, so that self-attention learns to read the anchors (0: off; see docs/model.md)")
    train.add_argument("--ambiguous-share", type=float,
                       help="builtin:procedural only: the share of examples drawn from the ambiguous edits (default: uniform)")
    train.add_argument("--consistency-weight", type=float, metavar="W",
                       help="with --anchors: weight of the term pulling a frame's clean estimate towards its anchors' "
                            "where they overlap (0: off; default: the recipe's, see docs/model.md)")
    train.add_argument("--travel", type=float, metavar="T",
                       help="with --anchors: how far a training clip's views may pan, as a share of the crop (default: the recipe's)")

    small = commands.add_parser("train-small", help="reproduce the shipped small model (builtin:small) from scratch on this machine")
    small.add_argument("-o", "--output", type=pathlib.Path, required=True, help="the model folder to write (must not exist)")
    small.add_argument("--work-dir", type=pathlib.Path, help="stages and checkpoints (default OUTPUT-work); run again to resume")
    small.add_argument("--seed", type=int, default=0,
                       help="the recipe's seed (default 0: the shipped weights; another seed is a replicate run, e.g. to "
                            "measure run-to-run spread)")
    small.add_argument("--anchored-steps", type=int, metavar="N",
                       help="steps of each anchored-training stage (default: the shipped recipe's; another value is a "
                            "variant of the recipe, recorded in the work folder)")
    return parser


class _ProgressBars:
    """Two tqdm bars: denoising steps of the anchor pass, then frames done."""

    def __init__(self, total_frames: int):
        from tqdm import tqdm

        self._tqdm = tqdm
        self.total_frames = total_frames
        self.anchors = None
        self.frames = None

    def __call__(self, progress) -> None:
        if progress.phase == "anchors" and progress.anchor_previews is None:
            if self.anchors is None:
                self.anchors = self._tqdm(total=progress.total_steps, desc="anchors", unit="step")
            self.anchors.n = progress.step
            self.anchors.refresh()
        elif progress.phase in ("frames", "encoding"):
            if self.frames is None:
                self.frames = self._tqdm(total=self.total_frames, desc="frames ", unit="frame")
            self.frames.n = progress.frames_done
            self.frames.refresh()

    def close(self) -> None:
        for bar in (self.anchors, self.frames):
            if bar is not None:
                bar.close()


def run_edit(args, source: pathlib.Path, output: pathlib.Path, start: int, frames: int | None) -> int:
    from .editing import EditSettings, check_edit_inputs, edit_video
    from .loading import load_pipeline

    settings = EditSettings(args.instruction, **values_from_arguments(args, EDIT_SETTING_NAMES[1:]))
    # Refuse bad input before spending seconds to minutes loading a model.
    _, count = check_edit_inputs(source, output, settings, start=start, frames=frames, overwrite=args.overwrite)
    print(f"loading {args.model} ...", file=sys.stderr)
    pipe = load_pipeline(args.model, device=args.device, config=args.config)
    bars = _ProgressBars(count)
    try:
        result = edit_video(pipe, source, output, settings, start=start, frames=count, overwrite=args.overwrite, on_progress=bars)
    finally:
        bars.close()
    print(f"wrote {result.output} ({result.frame_count} frames, {result.width}x{result.height} at "
          f"{float(result.fps):.3f} fps, anchors {list(result.anchor_indices)}) in {result.seconds:.1f} s", file=sys.stderr)
    return 0


def run_train(args) -> int:
    from .errors import InvalidInputError
    from .training.anchored import AnchoredTraining
    from .training.trainer import TrainConfig, train

    if args.anchors < 0:
        raise InvalidInputError(f"--anchors must be 0 (off) or more, got {args.anchors}")
    anchored = None
    if args.anchors:
        given = {"consistency_weight": args.consistency_weight, "travel": args.travel}
        if args.consistency_weight is not None and args.consistency_weight < 0:
            raise InvalidInputError(f"--consistency-weight must be 0 (off) or more, got {args.consistency_weight}")
        if args.travel is not None and not 0 <= args.travel <= 1:
            raise InvalidInputError(f"--travel must lie in [0, 1], got {args.travel}")
        anchored = AnchoredTraining(anchors=args.anchors, **{k: v for k, v in given.items() if v is not None})
    elif args.consistency_weight is not None or args.travel is not None:
        raise InvalidInputError("--consistency-weight and --travel are options of anchored training: give --anchors K too")
    config = TrainConfig(
        data=args.data, base=args.base, output=args.output, steps=args.steps, batch_size=args.batch_size,
        resolution=args.resolution, learning_rate=args.learning_rate, lr_schedule=args.lr_schedule,
        warmup_steps=args.warmup_steps, equivariant=args.equivariant, conditioning_dropout=args.conditioning_dropout,
        train_text_encoder=args.train_text_encoder, seed=args.seed, checkpoint_every=args.checkpoint_every,
        mixed_precision=args.mixed_precision, device=args.device, resume=args.resume,
        anchored=anchored, ambiguous_share=args.ambiguous_share,
    )  # fmt: skip
    result = train(config)
    print(f"wrote {result.output} ({result.steps} steps, final loss {sum(result.losses[-50:]) / len(result.losses[-50:]):.4f}) "
          f"in {result.seconds:.0f} s", file=sys.stderr)  # fmt: skip
    return 0


def run_train_small(args) -> int:
    import dataclasses

    from .errors import InvalidInputError
    from .training.recipe import SHIPPED_RECIPE, run_recipe

    work_dir = args.work_dir or args.output.with_name(args.output.name + "-work")
    recipe = dataclasses.replace(SHIPPED_RECIPE, seed=args.seed)
    if args.anchored_steps is not None:
        if args.anchored_steps < 1:
            raise InvalidInputError(f"--anchored-steps must be at least 1, got {args.anchored_steps}")
        recipe = dataclasses.replace(recipe, anchored_steps=args.anchored_steps)
    scores = run_recipe(args.output, work_dir, recipe)
    passing = [name for name, s in scores["edits"].items() if s["passes"]]
    print(f"edits that pass on the held-out photographs: {', '.join(passing) or 'none'}", file=sys.stderr)
    return 0


def _added_commands() -> dict:
    """The ``fairy.commands`` entry points of the installed packages: name -> entry point whose object is
    ``main(argv) -> exit status``, its docstring's first line the help."""
    from importlib.metadata import entry_points

    return {point.name: point for point in entry_points(group="fairy.commands")}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    added = _added_commands()  # read once: it dispatches here and lists them in the help
    command = added.get(argv[0]) if argv else None
    try:
        if command is not None:
            return command.load()(argv[1:])
        args = build_parser(added).parse_args(argv)
        if args.command == "edit":
            return run_edit(args, args.input, args.output, args.start, args.frames)
        if args.command == "train":
            return run_train(args)
        return run_train_small(args)
    except (EditCancelled, KeyboardInterrupt):
        print("fairy: cancelled; nothing was written", file=sys.stderr)
        return _EXIT_CANCELLED
    except FairyError as exc:
        print(f"fairy: error: {exc}", file=sys.stderr)
        return _EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
