"""A split edit (fairy.chunked) against one edit_video call, and how a second worker best gets the anchors.

    python bench/bench_split.py [--model builtin:small] [--frames 48] [--size 128x96] [--steps 10] [--workers 2]

Runs in one process, one worker after another, so the numbers are per part, not a parallel wall time:
* single: edit_video over the whole clip;
* the anchor pass, each chunk, the assembly (``--workers`` split the chunks evenly: the wall time of a
  parallel run is about anchors + the slowest worker's chunks + assembly);
* shipping the anchor cache to a second worker (AnchorCache.load of the saved file, and its size) against
  recomputing it (a second anchor pass).
Also checks that the assembled output equals the single edit frame for frame.
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile
import time
from fractions import Fraction

import numpy as np

from fairy import chunked
from fairy.editing import EditSettings, edit_video
from fairy.loading import load_pipeline
from fairy.video import iter_frames, make_test_clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:small")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", default="128x96")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    pipe = load_pipeline(args.model, device=args.device)
    with tempfile.TemporaryDirectory() as folder:
        tmp = pathlib.Path(folder)
        clip = make_test_clip(tmp / "clip.mp4", frames=args.frames, width=width, height=height, fps=Fraction(24))
        settings = EditSettings("make it night", steps=args.steps, batch_size=args.batch_size,
                                long_side=max(width, height))
        began = time.perf_counter()
        edit_video(pipe, clip, tmp / "single.mp4", settings)
        single = time.perf_counter() - began

        began = time.perf_counter()
        edit = chunked.run_anchor_pass(pipe, clip, settings, tmp / "work").edit
        anchor_pass = time.perf_counter() - began
        began = time.perf_counter()
        cache = chunked.load_cache(tmp / "work")
        ship = time.perf_counter() - began
        cache_bytes = (tmp / "work" / chunked.CACHE_FILE).stat().st_size
        chunks = chunked.chunk_ranges(edit)
        per_worker = [0.0] * args.workers
        for n, chunk in enumerate(chunks):
            began = time.perf_counter()
            chunked.run_chunk(pipe, edit, tmp / "work", chunk, cache=cache)
            per_worker[n % args.workers] += time.perf_counter() - began
        began = time.perf_counter()
        chunked.assemble(edit, tmp / "work", tmp / "split.mp4")
        assembly = time.perf_counter() - began
        same = np.array_equal(np.stack(list(iter_frames(tmp / "single.mp4", 0, args.frames))),
                              np.stack(list(iter_frames(tmp / "split.mp4", 0, args.frames))))

    parallel = anchor_pass + max(per_worker) + assembly
    print(f"model {args.model}, {args.frames} frames at {width}x{height}, {args.steps} steps, "
          f"{len(chunks)} chunks of {args.batch_size} frames over {args.workers} workers")
    print(f"single edit_video        {single:7.2f} s")
    print(f"anchor pass              {anchor_pass:7.2f} s")
    print(f"chunks per worker        {', '.join(f'{t:.2f}' for t in per_worker)} s")
    print(f"assembly                 {assembly:7.2f} s")
    print(f"split, {args.workers} workers in parallel ~{parallel:6.2f} s   speed-up ~{single / parallel:.2f}x")
    print(f"anchor cache: ship {ship * 1000:.1f} ms ({cache_bytes / 2**20:.2f} MiB) vs recompute {anchor_pass:.2f} s "
          f"({anchor_pass / max(ship, 1e-9):.0f}x)")
    print(f"output equals the single edit: {same}")


if __name__ == "__main__":
    main()
