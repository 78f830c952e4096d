"""Every GPU check of the speed work in one process, most important first: the device's own ceilings, Fairy
(K = 3) against per-frame editing (K = 0) at the target (120 frames, 512x384, 10 steps) in fp16, then bf16,
each fast-path option on its own (torch.compile'd blocks among them), half precision against fp32, and the
options that paid, together.

    python bench/gpu_session.py --out results/              # on the GPU (bench/gpu_session.sh installs wheels)
    python bench/gpu_session.py --device cpu --frames 3 --width 64 --height 64 --steps 1 --batch-size 2 \
        --half fp32 --only fp32,merged --out /tmp/s       # CPU dry run

The model is built once per precision (SD1.5-shaped InstructPix2Pix, random weights: bench/gpu_fairy.py),
each option switched on and off again on the same pipeline. After each configuration the results so far are
written (``results.json``, ``summary.txt``), so a run stopped at its limit keeps what it measured; a
configuration that would not finish inside ``--budget-s`` is skipped and says so.
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
import traceback
from fractions import Fraction

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import gpu_fairy  # noqa: E402  (bench/ is not a package)

_DATASHEET_TFLOPS = gpu_fairy._H100_DENSE_TFLOPS


@dataclasses.dataclass
class Config:
    """One measured configuration: a precision, the fast-path options on top of the plain path, which K."""

    name: str
    dtype: str = "fp16"
    anchors: tuple[int, ...] = (3, 0)  # K values run; K = 0 only where the option changes per-frame editing
    kernel: str = "concat"
    channels_last: bool = False
    vae_tiling: bool = False
    reduced_anchors: str | None = None
    overlap_io: bool = True
    batch_size: int | None = None  # None: --batch-size
    frames: int | None = None  # None: --frames
    cudnn_benchmark: bool = False
    compiled: bool = False
    phases: bool = False  # a second, instrumented run for each K (phase times)


def plan(half: str) -> list[Config]:
    """The configurations, most important first (``half``: the precision the options are measured in)."""
    other = {"fp16": "bf16", "bf16": "fp16", "fp32": "bf16"}[half]
    return [
        Config(half, half, phases=True),
        Config(other, other),
        Config("merged", half, anchors=(3,), kernel="merged"),
        Config("reduced-finest", half, anchors=(3,), reduced_anchors="finest"),
        Config("channels-last", half, channels_last=True),
        Config("compiled", half, compiled=True),
        Config("batch-16", half, batch_size=16),
        Config("24-frames", half, anchors=(3,), frames=24),  # peak memory: 24 frames against 120
        Config("reduced-all", half, anchors=(3,), reduced_anchors="all"),
        Config("cudnn-benchmark", half, cudnn_benchmark=True),
        Config("no-overlap-io", half, anchors=(3,), overlap_io=False),
        # (The tiled VAE is not here: its tiles are 512 px, so at 512x384 it does nothing.)
        Config(f"{half}-again", half),  # the plain path once more: how far the device drifted over the session
    ]


def measure_ceilings(device) -> dict:
    """The device's bf16 matrix rate on random data and its copy bandwidth (read + write), each the median of
    timed repeats after warm-ups (METHOD.md: measure the ceilings, do not take the datasheet's)."""
    import torch

    if device.type != "cuda":
        return {}
    n = 8192
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    src = torch.randn(2**30 // 4, device=device)  # 4 GiB of fp32, far beyond L2
    dst = torch.empty_like(src)

    def median_ms(fn, repeats=10):
        for _ in range(3):
            fn()
        times = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        return sorted(times)[len(times) // 2]

    matmul_ms = median_ms(lambda: a @ b)
    copy_ms = median_ms(lambda: dst.copy_(src))
    result = {"bf16_matmul_tflops": round(2 * n**3 / matmul_ms / 1e9, 1),
              "copy_tb_per_s": round(2 * src.numel() * 4 / copy_ms / 1e9, 2)}
    del a, b, src, dst
    torch.cuda.empty_cache()
    return result


def build_pipeline(device, dtype_name: str):
    """The SD1.5-shaped pipeline at ``dtype_name``, weights drawn on the device from seed 0 (the same weights
    for every precision)."""
    import torch

    from fairy.pipeline import FairyPipeline
    from fairy.tiny import build_sd15_shaped_components

    with torch.device(device):
        components = build_sd15_shaped_components(seed=0)
    pipe = FairyPipeline(**components).to(device, dtype=getattr(torch, gpu_fairy._DTYPES[dtype_name]))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@contextlib.contextmanager
def options_on(pipe, config: Config):
    """Switch ``config``'s options on for the block, back to the plain path after."""
    import torch

    gpu_fairy.use_options(pipe, kernel=config.kernel, channels_last=config.channels_last,
                          vae_tiling=config.vae_tiling, reduced_anchors=config.reduced_anchors,
                          compiled_blocks=config.compiled)
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = config.cudnn_benchmark
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = benchmark
        gpu_fairy.use_options(pipe)


def precision_check(device, clip, args, pipelines: dict) -> dict:
    """PSNR of fp16's and bf16's edited frames against fp32's (TF32 off), the same frames, seed and weights,
    K = 3, straight from the pipeline (float output, before the video codec)."""
    import numpy as np
    import torch

    from fairy import video
    from fairy.pipeline import FairyParams

    count = min(args.frames, max(8, args.batch_size))
    frames = np.stack(list(video.iter_frames(clip, 0, count)))
    params = FairyParams(steps=args.steps)
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    outputs = {}
    try:
        for name in ("fp32", "fp16", "bf16"):
            pipe = pipelines.get(name) or build_pipeline(device, name)
            with torch.no_grad():
                embeds = pipe.encode_instruction("make it a watercolor painting", params)
                _, cache = pipe.edit_anchors(frames[:3], [0, 1, 2], embeds, params)
                edited = pipe.edit_frames(frames[3:], list(range(3, count)), embeds, params, cache, output_type="pt")
            outputs[name] = edited.float().cpu()
            del pipe, cache
            if device.type == "cuda":
                torch.cuda.empty_cache()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32

    def psnr(a, b):  # frames in [0, 1]
        mse = float(((a - b) ** 2).mean())
        return round(float(10 * np.log10(1.0 / mse)), 2) if mse else float("inf")

    return {"frames": count - 3, "fp16_psnr_db": psnr(outputs["fp16"], outputs["fp32"]),
            "bf16_psnr_db": psnr(outputs["bf16"], outputs["fp32"])}


def run_config(pipe, config: Config, clip, tmp: pathlib.Path, args, flops_cache: dict) -> dict:
    """Wall time, frames/s and peak memory for each K of ``config`` (phases too where asked), with the FLOPs
    counted for its anchor mode and the achieved rate."""
    from fairy.pipeline import FairyParams

    run_args = argparse.Namespace(**{**vars(args), "frames": min(config.frames or args.frames, args.frames),
                                     "batch_size": config.batch_size or args.batch_size,
                                     "overlap_io": config.overlap_io})
    result = {"config": dataclasses.asdict(config), "runs": {}}
    with options_on(pipe, config):
        began = time.perf_counter()
        warm = argparse.Namespace(**{**vars(run_args), "frames": min(run_args.frames, 2 * run_args.batch_size)})
        gpu_fairy._run(pipe, clip, tmp, warm, 1, False)  # warm-up: kernels, autotuning, compiled graphs
        result["warm_up_seconds"] = round(time.perf_counter() - began, 2)
        timed = {anchors: [] for anchors in config.anchors}
        for _ in range(args.repeats):  # K values interleaved, so a drift in the device's speed hits them alike
            for anchors in config.anchors:
                timed[anchors].append(gpu_fairy._run(pipe, clip, tmp, run_args, anchors, instrument=False))
        for anchors in config.anchors:
            run = median_run(timed[anchors])
            if config.phases:
                run["phases"] = gpu_fairy._run(pipe, clip, tmp, run_args, anchors, instrument=True)["phases"]
            key = (anchors, config.reduced_anchors)
            if key not in flops_cache:
                flops_cache[key] = gpu_fairy._count_flops(pipe, FairyParams(steps=args.steps), args.width,
                                                          args.height, anchors)
            flops = flops_cache[key]
            total = (run_args.frames - anchors) * args.steps * flops["frame, per step"] + run_args.frames * (
                flops["vae encode, per frame"] + flops["vae decode, per frame"])
            if anchors:
                total += args.steps * flops["anchor pass, per step"]
            run["tflop"] = round(total / 1e12, 3)
            run["achieved_tflops"] = round(total / 1e12 / run["seconds"], 1)
            run["gflop_by_part"] = {part: round(value / 1e9, 3) for part, value in flops.items()}
            result["runs"][f"K={anchors}"] = run
    return result


def median_run(runs: list[dict]) -> dict:
    """The run of median wall time (the lower middle for an even count), with every run's seconds and the
    highest peak memory beside it."""
    ordered = sorted(runs, key=lambda run: run["seconds"])
    run = dict(ordered[(len(ordered) - 1) // 2])
    if len(runs) > 1:
        run["seconds_each"] = [r["seconds"] for r in runs]
        if "peak_memory_gib" in run:
            run["peak_memory_gib"] = max(r["peak_memory_gib"] for r in runs)
    return run


def choose_best(half: str, results: dict) -> Config | None:
    """The options that made Fairy (K = 3) at least 2 % faster on their own, together, in the faster precision."""

    def seconds(name):
        entry = results.get(name, {})
        return entry.get("runs", {}).get("K=3", {}).get("seconds")

    base = seconds(half)
    if base is None:
        return None
    other = {"fp16": "bf16", "bf16": "fp16", "fp32": "bf16"}[half]
    faster = lambda name: seconds(name) is not None and seconds(name) < 0.98 * base  # noqa: E731
    dtype = other if faster(other) else half
    best = Config("best", dtype, kernel="merged" if faster("merged") else "concat",
                  channels_last=faster("channels-last"), cudnn_benchmark=faster("cudnn-benchmark"),
                  batch_size=16 if faster("batch-16") else None, compiled=faster("compiled"))
    return best


def summary_lines(session: dict) -> list[str]:
    lines = [f"{session['device']}, {session['date']}, torch {session['torch']}, diffusers {session['diffusers']}",
             f"ceilings: {session.get('ceilings')}", f"precision vs fp32: {session.get('precision')}",
             "config | K=3 s | K=0 s | K3/K0 | K=3 frames/s | K=3 peak GiB | K=3 TFLOP/s | warm-up s"]
    base_k0 = {}
    for name, entry in session["configs"].items():
        if "error" in entry or "skipped" in entry:
            lines.append(f"{name} | {entry.get('error') or entry.get('skipped')}")
            continue
        runs, config = entry["runs"], entry["config"]
        k3, k0 = runs.get("K=3", {}), runs.get("K=0", {})
        if k0:
            base_k0.setdefault(config["dtype"], k0["seconds"])
        reference = k0.get("seconds") or base_k0.get(config["dtype"])
        ratio = f"{k3['seconds'] / reference:.3f}" if k3 and reference else "-"
        lines.append(f"{name} | {k3.get('seconds', '-')} | {k0.get('seconds', '-')} | {ratio} | {k3.get('fps', '-')}"
                     f" | {k3.get('peak_memory_gib', '-')} | {k3.get('achieved_tflops', '-')} | {entry['warm_up_seconds']}")
        for label, run in runs.items():
            if "phases" in run:
                lines.append(f"  {name} {label} phases: " + ", ".join(f"{k} {v}" for k, v in run["phases"].items()))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    gpu_fairy.add_job_arguments(parser)
    parser.add_argument("--half", choices=sorted(gpu_fairy._DTYPES), default="fp16",
                        help="the precision the options run in (fp32 for a CPU dry run: half is slow there)")
    parser.add_argument("--only", help="comma-separated names of configurations, 'precision' and 'best' (default: all)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed runs of each K per configuration, interleaved; the median is reported")
    parser.add_argument("--budget-s", type=float, default=float("inf"),
                        help="skip a configuration that would end past this many seconds from the start")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("bench/out/gpu"))
    args = parser.parse_args(argv)
    started = time.perf_counter()

    import diffusers
    import torch

    from fairy.video import make_test_clip

    device = torch.device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    session = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
               "diffusers": diffusers.__version__, "frames": args.frames, "size": f"{args.width}x{args.height}",
               "steps": args.steps, "batch_size": args.batch_size, "configs": {}}

    def write():
        (args.out / "results.json").write_text(json.dumps(session, indent=2))
        (args.out / "summary.txt").write_text("\n".join(summary_lines(session)) + "\n")

    session["ceilings"] = measure_ceilings(device)
    print("ceilings:", session["ceilings"], flush=True)
    only = set(args.only.split(",")) if args.only else None
    configs = [c for c in plan(args.half) if only is None or c.name in only]
    flops_cache: dict = {}
    pipelines: dict = {}
    per_run = None  # seconds of one K = 3 run at the target, once measured

    def affordable(config: Config) -> bool:
        if per_run is None:
            return True
        runs = len(config.anchors) * (args.repeats + (1 if config.phases else 0)) + 1  # + the warm-up
        estimate = per_run * runs * 1.3 + (240 if config.compiled else 0)
        return time.perf_counter() - started + estimate < args.budget_s

    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        clip = make_test_clip(tmp / "clip.mp4", frames=args.frames, width=args.width, height=args.height,
                              fps=Fraction(30), audio=False)

        def measure(config: Config) -> None:
            nonlocal per_run
            if not affordable(config):
                session["configs"][config.name] = {"skipped": "not enough time left in --budget-s"}
                write()
                return
            print(f"== {config.name}: {config}", flush=True)
            try:
                if config.dtype not in pipelines:
                    pipelines.clear()  # one precision's model at a time
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    pipelines[config.dtype] = build_pipeline(device, config.dtype)
                entry = run_config(pipelines[config.dtype], config, clip, tmp, args, flops_cache)
                if per_run is None and "K=3" in entry["runs"]:
                    per_run = entry["runs"]["K=3"]["seconds"]
                session["configs"][config.name] = entry
                print(json.dumps(entry["runs"]), flush=True)
            except Exception as error:  # noqa: BLE001  (one configuration's failure must not lose the rest)
                traceback.print_exc()
                session["configs"][config.name] = {"error": f"{type(error).__name__}: {error}"[:500]}
            write()

        for config in configs:
            measure(config)
        if only is None or "precision" in only:
            try:
                session["precision"] = precision_check(device, clip, args, pipelines)
            except Exception as error:  # noqa: BLE001
                traceback.print_exc()
                session["precision"] = {"error": f"{type(error).__name__}: {error}"[:500]}
            print("precision:", session["precision"], flush=True)
            write()
        best = choose_best(args.half, session["configs"])
        if best is not None and (only is None or "best" in only):
            measure(best)
            measure(dataclasses.replace(best, name="best-reduced-finest", anchors=(3,), reduced_anchors="finest"))
    session["session_seconds"] = round(time.perf_counter() - started, 1)
    write()
    print("\n".join(summary_lines(session)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
