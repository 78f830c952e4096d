"""Scale-out: the wall time of one clip through the server with one worker, with two, and with two Ray actors.

    python bench/bench_scaleout.py [--frames 48] [--steps 10] [--long-side 96] [--model builtin:small]

Each worker gets one core (OMP_NUM_THREADS=1 for local worker processes; one CPU, so one torch thread, for
each Ray actor), so two workers can at best halve the time on a 2-core machine. Times are submit -> DONE over
gRPC with every worker's model already loaded and warmed by a short job. Also measured: the time the anchor
cache takes to reach a second worker, loaded from the parts folder and fetched through Ray's object store by
another actor, against recomputing it (the anchor pass). Target: 1 worker / 2 workers >= 1.7.
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import sys
import tempfile
import time
from fractions import Fraction


def _request(pb, path, job_id, frames, steps, long_side):
    return pb.SubmitEditRequest(
        job_id=job_id, source=pb.MediaSource(path=str(path)),
        range=pb.FrameRange(start_frame=0, frame_count=frames, rate=pb.Rational(num=24, den=1)),
        instruction="make it night", parameters=pb.EditParameters(steps=steps, long_side=long_side, seed=1),
    )  # fmt: skip


def _timed_job(config, clip, frames, steps, long_side) -> float:
    """Start a server with ``config``, warm every worker, time one job, stop the server."""
    import grpc
    from fairy_proto.v1 import fairy_pb2 as pb
    from fairy_proto.v1 import fairy_pb2_grpc as pbg

    from fairy_server.app import FairyServer

    server = FairyServer(config).start()
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        stub = pbg.FairyEditorStub(channel)
        while not server.manager.workers() or not all(w.ready for w in server.manager.workers()):
            time.sleep(0.1)

        def run(job_id, count, job_steps) -> float:
            began = time.perf_counter()
            stub.SubmitEdit(_request(pb, clip, job_id, count, job_steps, long_side))
            for event in stub.WatchJob(pb.WatchJobRequest(job_id=job_id)):
                if event.job.state in (pb.JOB_STATE_DONE, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED):
                    break
            if event.job.state != pb.JOB_STATE_DONE:
                raise SystemExit(f"{job_id} failed: {event.job.error_message}")
            return time.perf_counter() - began

        run("warm-up", 16, 2)  # every worker renders a chunk once
        seconds = run("timed", frames, steps)
        channel.close()
        return seconds
    finally:
        server.stop()


def _cache_transfer(clip, frames, steps, long_side, model) -> dict[str, float]:
    """The anchor pass once; then its cache loaded from the parts folder, and fetched from the object store
    by another Ray actor (the way a chunk worker gets it)."""
    import ray
    from fairy import chunked
    from fairy.editing import EditSettings
    from fairy.loading import load_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp) / "work"
        pipe = load_pipeline(model, device="cpu")
        settings = EditSettings("make it night", steps=steps, long_side=long_side, seed=1)
        began = time.perf_counter()
        anchor_pass = chunked.run_anchor_pass(pipe, clip, settings, work, frames=frames)
        recompute = time.perf_counter() - began
        began = time.perf_counter()
        chunked.load_cache(work)
        load = time.perf_counter() - began
        ref = ray.put(anchor_pass.cache)

        @ray.remote(num_cpus=1)
        def fetch(box) -> float:
            start = time.perf_counter()
            ray.get(box[0])
            return time.perf_counter() - start

        ray.get(fetch.remote([ref]))  # start the worker process first
        fetched = ray.get(fetch.remote([ref]))
    return dict(recompute=recompute, load=load, object_store=fetched, mib=anchor_pass.cache.nbytes / 2**20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--long-side", type=int, default=96)
    parser.add_argument("--model", default="builtin:small")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the local worker processes: one core each

    import ray
    from fairy.video import make_test_clip

    from fairy_server.config import ServerConfig

    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        media = tmp / "media"
        media.mkdir()
        clip = make_test_clip(media / "clip.mp4", frames=args.frames, width=128, height=96, fps=Fraction(24),
                              audio=False)

        def config(name, **over):
            return ServerConfig(data_dir=tmp / name, address="127.0.0.1:0", model=args.model,
                                media_roots=(media.resolve(),), **over)

        times = {}
        times["local, 1 worker"] = _timed_job(config("one", devices="cpu"), clip, args.frames, args.steps, args.long_side)
        times["local, 2 workers"] = _timed_job(config("two", devices="cpu,cpu"), clip, args.frames, args.steps,
                                               args.long_side)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=1 << 30)
        try:
            times["Ray, 2 actors"] = _timed_job(config("ray", devices="cpu,cpu", backend="ray"), clip, args.frames,
                                                args.steps, args.long_side)
            transfer = _cache_transfer(clip, args.frames, args.steps, args.long_side, args.model)
        finally:
            ray.shutdown()

    single = times["local, 1 worker"]
    print(f"clip: {args.frames} frames 128x96 edited at long side {args.long_side}, {args.steps} steps, "
          f"model {args.model}, one core per worker")
    for name, seconds in times.items():
        print(f"{name}: {seconds:.1f} s  (speed-up over 1 worker {single / seconds:.2f}x)")
    print(f"anchor cache {transfer['mib']:.1f} MiB to a second worker: loaded from the parts folder "
          f"{transfer['load'] * 1000:.1f} ms, fetched from Ray's object store {transfer['object_store'] * 1000:.1f} ms, "
          f"against {transfer['recompute']:.2f} s to recompute it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
