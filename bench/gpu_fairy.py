"""Fairy at real size on one device: an SD1.5-shaped InstructPix2Pix (random weights, the public shapes, so
the same computation as the real model without a download) edits a clip decode to encode.

    python bench/gpu_fairy.py                          # CUDA: 120 frames 512x384, 10 steps, K = 3 and K = 0
    python bench/gpu_fairy.py --device cpu --frames 4 --width 64 --height 64 --steps 2   # what CI runs
    python bench/gpu_fairy.py --dtype bf16 --kernel merged --json results.json
    python bench/gpu_fairy.py --channels-last --reduced-anchors finest --vae-tiling --no-overlap-io --compiled-blocks

For K = 3 (Fairy) and K = 0 (per-frame editing, the baseline) it prints the wall time of ``edit_video`` and
frames per second, then, from a second, instrumented run, the time of each phase (video decode, VAE
encode, anchor pass, frame pass UNet calls, VAE decode, video encode), the peak device memory, the FLOPs
counted with ``torch.utils.flop_counter`` (one UNet call of each kind and the VAE per frame, multiplied
out), and the achieved fraction of the device's peak (``--peak-tflops``; on CUDA the H100/H200 dense
fp16/bf16 figure by default). The instrumented run synchronises the device around every timed call, so
its phases add up to a little more than the clean run's wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import pathlib
import sys
import tempfile
import time
from fractions import Fraction

_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
_H100_DENSE_TFLOPS = 989.4  # H100/H200 SXM, dense fp16/bf16 tensor cores


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Phases:
    """Seconds spent inside wrapped callables, by phase name (device synchronised around each call)."""

    def __init__(self, device):
        self.device = device
        self.seconds: dict[str, float] = {}

    def wrap(self, name, fn):
        def timed(*args, **kwargs):
            _sync(self.device)
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                _sync(self.device)
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - began

        return timed

    def wrap_iterator(self, name, fn):
        def timed(*args, **kwargs):
            iterator = iter(fn(*args, **kwargs))
            while True:
                began = time.perf_counter()
                try:
                    item = next(iterator)
                except StopIteration:
                    return
                finally:
                    self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - began
                yield item

        return timed


@contextlib.contextmanager
def _instrumented(pipe, phases: _Phases):
    """Time the phases by wrapping the pipeline's and the video module's calls (restored on exit)."""
    from fairy import video

    originals = {
        (pipe, "_encode_frames"): pipe._encode_frames, (pipe, "_decode"): pipe._decode,
        (pipe, "edit_anchors"): pipe.edit_anchors, (pipe, "edit_frames"): pipe.edit_frames,
        (video, "iter_frames"): video.iter_frames, (video, "read_frames"): video.read_frames,
        (video.VideoWriter, "write"): video.VideoWriter.write,
    }  # fmt: skip
    pipe._encode_frames = phases.wrap("vae encode", pipe._encode_frames)
    pipe._decode = phases.wrap("vae decode", pipe._decode)
    pipe.edit_anchors = phases.wrap("anchor pass (all)", pipe.edit_anchors)
    pipe.edit_frames = phases.wrap("frame pass (all)", pipe.edit_frames)
    video.iter_frames = phases.wrap_iterator("video decode", video.iter_frames)
    video.read_frames = phases.wrap("video decode", video.read_frames)
    video.VideoWriter.write = phases.wrap("video encode", video.VideoWriter.write)
    try:
        yield
    finally:
        for (owner, name), original in originals.items():
            if owner is pipe:
                delattr(pipe, name)  # back to the class's method
            else:
                setattr(owner, name, original)


def _math_attention_with_lse(query, key, value):
    """fairy.attention's merged-kernel helper on plain matmuls, which the FLOP counter sees."""
    import torch

    scores = (query @ key.transpose(-1, -2)).float() * query.shape[-1] ** -0.5
    lse = torch.logsumexp(scores, dim=-1)
    return torch.exp(scores - lse[..., None]).to(value.dtype) @ value, lse


def _count_flops(pipe, params, width, height, anchors) -> dict[str, float]:
    """FLOPs of one UNet call (all guidance branches) for one frame reading K anchors, of the anchor pass's
    call for K anchors, and of the VAE per frame; counted on the real modules at the real shapes."""
    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    frames = np.zeros((max(anchors, 1), height, width, 3), np.uint8)
    embeds = pipe.encode_instruction("make it a watercolor painting", params)
    counts = {}

    def counted(fn) -> float:
        # The fused attention kernels are invisible to the counter (it sees no matmul inside them): count
        # with the math backend and the concat kernel, the same arithmetic as every kernel does (reduced
        # anchors always take the merged kernel: its attention helper is swapped for plain matmuls here).
        from torch.nn.attention import SDPBackend, sdpa_kernel

        from fairy import attention

        kernel, fused = pipe.anchor_kernel, attention._attention_with_lse
        pipe.use_anchor_kernel("concat")
        attention._attention_with_lse = _math_attention_with_lse
        try:
            with sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter, torch.no_grad():
                fn()
        finally:
            attention._attention_with_lse = fused
            pipe.use_anchor_kernel(kernel)
        return float(counter.get_total_flops())

    one = dataclasses.replace(params, steps=1)
    if anchors:
        counts["anchor pass, per step"] = counted(lambda: pipe.edit_anchors(frames[:anchors], list(range(anchors)), embeds, one))
        _, cache = pipe.edit_anchors(frames[:anchors], list(range(anchors)), embeds, one)
    else:
        cache = None
    whole = counted(lambda: pipe.edit_frames(frames[:1], [0], embeds, one, cache))
    latents = pipe._encode_frames(frames[:1])
    counts["vae encode, per frame"] = counted(lambda: pipe._encode_frames(frames[:1]))
    counts["vae decode, per frame"] = counted(lambda: pipe._decode(latents, "uint8"))
    counts["frame, per step"] = whole - counts["vae encode, per frame"] - counts["vae decode, per frame"]
    if anchors:
        counts["anchor pass, per step"] -= anchors * (counts["vae encode, per frame"] + counts["vae decode, per frame"])
    return counts


def _run(pipe, clip, out_dir, args, anchors, instrument: bool) -> dict:
    import torch
    from fairy.editing import EditSettings, edit_video

    settings = EditSettings("make it a watercolor painting", steps=args.steps, anchors=anchors, seed=0,
                            batch_size=args.batch_size, long_side=max(args.width, args.height))
    device = pipe.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    phases = _Phases(device)
    context = _instrumented(pipe, phases) if instrument else contextlib.nullcontext()
    _sync(device)
    began = time.perf_counter()
    with context:
        edit_video(pipe, clip, out_dir / f"k{anchors}-{'phases' if instrument else 'clean'}.mp4", settings,
                   frames=args.frames, overwrite=True, overlap_io=args.overlap_io)
    _sync(device)
    seconds = time.perf_counter() - began
    result = {"seconds": round(seconds, 3), "fps": round(args.frames / seconds, 2)}
    if device.type == "cuda":
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    if instrument:
        s = phases.seconds
        unet_anchor = s.get("anchor pass (all)", 0.0)
        unet_frames = s.get("frame pass (all)", 0.0)
        # The passes include their own VAE calls; report the UNet part on its own.
        vae = s.get("vae encode", 0.0) + s.get("vae decode", 0.0)
        phase_table = {
            "video decode": s.get("video decode", 0.0), "vae encode": s.get("vae encode", 0.0),
            "anchor pass + frame pass (UNet)": unet_anchor + unet_frames - vae,
            "anchor pass (with its VAE)": unet_anchor, "vae decode": s.get("vae decode", 0.0),
            "video encode": s.get("video encode", 0.0),
        }  # fmt: skip
        result["phases"] = {k: round(v, 3) for k, v in phase_table.items()}
    return result


def use_options(pipe, *, kernel="concat", channels_last=False, vae_tiling=False, reduced_anchors=None,
                compiled_blocks=False) -> None:
    """Set every fast-path option of ``pipe`` (the defaults: the plain path)."""
    pipe.use_anchor_kernel(kernel)
    pipe.use_channels_last(channels_last)
    pipe.use_vae_tiling(vae_tiling)
    pipe.use_reduced_anchors(2 if reduced_anchors else 1, reduced_anchors or "finest")
    if compiled_blocks != pipe.compiled_blocks:
        pipe.use_compiled_blocks(compiled_blocks)


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """The job's options, defaulting to the target: CUDA, 120 frames at 512x384, 10 steps, batches of 8."""
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_job_arguments(parser)
    parser.add_argument("--anchors", type=int, default=3)
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default=None, help="default: fp16 on CUDA, fp32 on the CPU")
    parser.add_argument("--kernel", choices=["concat", "merged"], default="concat", help="anchor attention kernel")
    parser.add_argument("--channels-last", action="store_true", help="UNet and VAE channels-last")
    parser.add_argument("--vae-tiling", action="store_true", help="tiled VAE encode and decode")
    parser.add_argument("--reduced-anchors", choices=["finest", "all"], help="anchors pooled 2x2 at these levels")
    parser.add_argument("--compiled-blocks", action="store_true", help="torch.compile each UNet and VAE block")
    parser.add_argument("--no-overlap-io", dest="overlap_io", action="store_false",
                        help="decode and encode in the main thread, not beside the model")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help=f"the device's peak, for the achieved fraction (CUDA default {_H100_DENSE_TFLOPS})")
    parser.add_argument("--json", type=pathlib.Path, help="also write the results here")
    args = parser.parse_args(argv)

    import torch
    from fairy.pipeline import FairyParams, FairyPipeline
    from fairy.tiny import build_sd15_shaped_components
    from fairy.video import make_test_clip

    device = torch.device(args.device)
    dtype_name = args.dtype or ("fp16" if device.type == "cuda" else "fp32")
    dtype = getattr(torch, _DTYPES[dtype_name])
    peak = args.peak_tflops or (_H100_DENSE_TFLOPS if device.type == "cuda" else None)
    pipe = FairyPipeline(**build_sd15_shaped_components()).to(device, dtype=dtype)
    use_options(pipe, kernel=args.kernel, channels_last=args.channels_last, vae_tiling=args.vae_tiling,
                reduced_anchors=args.reduced_anchors, compiled_blocks=args.compiled_blocks)
    pipe.set_progress_bar_config(disable=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    options = {"channels_last": args.channels_last, "vae_tiling": args.vae_tiling, "compiled_blocks": args.compiled_blocks,
               "reduced_anchors": args.reduced_anchors, "overlap_io": args.overlap_io}
    results = {"device": name, "dtype": dtype_name, "kernel": args.kernel, "options": options, "frames": args.frames,
               "size": f"{args.width}x{args.height}", "steps": args.steps, "batch_size": args.batch_size, "runs": {}}
    params = FairyParams(steps=args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        clip = make_test_clip(tmp / "clip.mp4", frames=args.frames, width=args.width, height=args.height,
                              fps=Fraction(30), audio=False)
        warm = argparse.Namespace(**{**vars(args), "frames": min(args.frames, 2 * args.batch_size)})
        _run(pipe, clip, tmp, warm, min(1, args.anchors), False)  # warm-up: kernels, allocator, autotuning
        for anchors in (args.anchors, 0):
            run = _run(pipe, clip, tmp, args, anchors, instrument=False)
            run.update({k: v for k, v in _run(pipe, clip, tmp, args, anchors, instrument=True).items() if k == "phases"})
            flops = _count_flops(pipe, params, args.width, args.height, anchors)
            total = (args.frames - anchors) * args.steps * flops["frame, per step"] + args.frames * (
                flops["vae encode, per frame"] + flops["vae decode, per frame"])
            if anchors:
                total += args.steps * flops["anchor pass, per step"]
            run["tflop"] = round(total / 1e12, 3)
            run["flops_by_part_tflop"] = {k: round(v / 1e12, 7) for k, v in flops.items()}
            run["achieved_tflops"] = round(total / 1e12 / run["seconds"], 2)
            if peak:
                run["fraction_of_peak"] = round(total / 1e12 / run["seconds"] / peak, 4)
            results["runs"][f"K={anchors}"] = run
    fairy_run, baseline = results["runs"][f"K={args.anchors}"], results["runs"]["K=0"]
    results["fairy_over_per_frame"] = round(fairy_run["seconds"] / baseline["seconds"], 3)

    print(f"{name}, {dtype_name}, kernel {args.kernel}, options {options}: {args.frames} frames "
          f"{args.width}x{args.height}, {args.steps} steps, batch {args.batch_size}")
    for label, run in results["runs"].items():
        memory = f", peak memory {run['peak_memory_gib']} GiB" if "peak_memory_gib" in run else ""
        fraction = f" ({run['fraction_of_peak'] * 100:.1f} % of peak)" if "fraction_of_peak" in run else ""
        print(f"{label}: {run['seconds']} s, {run['fps']} frames/s{memory}; {run['tflop']} TFLOP counted, "
              f"{run['achieved_tflops']} TFLOP/s{fraction}")
        print("   phases (instrumented run): " + ", ".join(f"{k} {v} s" for k, v in run["phases"].items()))
        print("   FLOPs by part (TFLOP): " + ", ".join(f"{k} {v}" for k, v in run["flops_by_part_tflop"].items()))
    print(f"Fairy (K = {args.anchors}) over per-frame editing (K = 0): {results['fairy_over_per_frame']}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
