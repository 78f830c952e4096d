"""A real ``fairy-server`` whose workers meet the faults a test asks for.

    python tests/server/faulty_server.py [--inject-oom N] [--hold-load PATH]
        [--hold-frames TEXT DIR] [--oom-instructions TEXT] -- SERVER ARGS...

The server, its store and its workers are the production ones; only the
worker's entry point is wrapped, here in the test's own code, so that inside
each worker process the library's ``load_pipeline`` and ``edit_video`` meet
the faults before the real functions run:

* ``--inject-oom N``: the first N render attempts of a worker raise
  ``torch.cuda.OutOfMemoryError`` (what a full GPU raises), so the server's
  batch halving can be tested on a CPU;
* ``--hold-load PATH``: the worker waits for PATH to exist before loading its
  model (a server that is up but not yet serving);
* ``--hold-frames TEXT DIR``: a job whose instruction contains TEXT stops at
  the first progress report of its frame pass (so it is in FRAMES, its anchor
  previews sent) until it is cancelled, the server stops, or ``DIR/<job_id>``
  exists; a job is deterministically still running while a test looks at it
  (a job needs more frames than anchors to have a frame pass);
* ``--oom-instructions TEXT``: every render attempt of a job whose instruction
  contains TEXT raises ``torch.cuda.OutOfMemoryError``, so the job fails the
  way a full GPU fails it, with the server's own message; other jobs render.
"""

from __future__ import annotations

import argparse
import functools
import os
import pathlib
import sys
import time


def _held(edit_fn, release: pathlib.Path):
    """``edit_fn`` that waits at its first frame-pass report until cancelled or ``release`` exists."""
    from fairy.errors import EditCancelled

    def held_edit(*args, on_progress=None, should_cancel=None, **kwargs):
        held = False

        def progress(p):
            nonlocal held
            if on_progress is not None:
                on_progress(p)
            if p.phase == "frames" and not held:
                held = True
                while not release.exists():
                    if should_cancel is not None and should_cancel():
                        raise EditCancelled("cancelled while held by the test")
                    time.sleep(0.02)

        return edit_fn(*args, on_progress=progress, should_cancel=should_cancel, **kwargs)

    return held_edit


def _out_of_memory(*args, **kwargs):
    import torch

    raise torch.cuda.OutOfMemoryError("injected for a job that asked for it")


def _faulty_worker(settings, tasks, events, cancel_seq, *, inject_oom: int, hold_load: str | None,
                   hold_frames: tuple[str, str] | None = None, oom_instructions: str | None = None):
    """Runs in the spawned worker process: install the faults, then the real worker."""
    import fairy.editing
    import fairy.loading
    from fairy_server import worker

    if hold_load:
        real_load = fairy.loading.load_pipeline

        def held_load(*args, **kwargs):
            while not os.path.exists(hold_load):
                time.sleep(0.05)
            return real_load(*args, **kwargs)

        fairy.loading.load_pipeline = held_load
    if inject_oom:
        real_edit, remaining = fairy.editing.edit_video, [inject_oom]

        def failing_edit(*args, **kwargs):
            if remaining[0] > 0:
                remaining[0] -= 1
                import torch

                raise torch.cuda.OutOfMemoryError("injected")
            return real_edit(*args, **kwargs)

        fairy.editing.edit_video = failing_edit
    if hold_frames or oom_instructions:
        real_run_task = worker.run_task

        def run_task(task, pipelines, reporter, *, edit_fn=None, **kwargs):
            edit_fn = edit_fn or fairy.editing.edit_video
            if oom_instructions and oom_instructions in task.plan.instruction:
                edit_fn = _out_of_memory
            elif hold_frames and hold_frames[0] in task.plan.instruction:
                edit_fn = _held(edit_fn, pathlib.Path(hold_frames[1]) / task.job_id)
            return real_run_task(task, pipelines, reporter, edit_fn=edit_fn, **kwargs)

        worker.run_task = run_task
    worker.worker_main(settings, tasks, events, cancel_seq)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inject-oom", type=int, default=0)
    parser.add_argument("--hold-load")
    parser.add_argument("--hold-frames", nargs=2, metavar=("TEXT", "DIR"))
    parser.add_argument("--oom-instructions", metavar="TEXT")
    parser.add_argument("server_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    server_args = args.server_args[1:] if args.server_args[:1] == ["--"] else args.server_args

    from fairy_server import backend, cli

    backend.worker_main = functools.partial(
        _faulty_worker, inject_oom=args.inject_oom, hold_load=args.hold_load,
        hold_frames=tuple(args.hold_frames) if args.hold_frames else None, oom_instructions=args.oom_instructions,
    )
    return cli.main(server_args)


if __name__ == "__main__":
    sys.exit(main())
