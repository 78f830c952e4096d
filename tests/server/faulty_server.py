"""A real ``fairy-server`` whose workers meet the faults a test asks for.

    python tests/server/faulty_server.py [--inject-oom N] [--hold-load PATH] -- SERVER ARGS...

The server, its store and its workers are the production ones; only the
worker's entry point is wrapped, here in the test's own code, so that inside
each worker process the library's ``load_pipeline`` and ``edit_video`` meet
the faults before the real functions run:

* ``--inject-oom N``: the first N render attempts of a worker raise
  ``torch.cuda.OutOfMemoryError`` (what a full GPU raises), so the server's
  batch halving can be tested on a CPU;
* ``--hold-load PATH``: the worker waits for PATH to exist before loading its
  model (a server that is up but not yet serving).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time


def _faulty_worker(settings, tasks, events, cancel_seq, *, inject_oom: int, hold_load: str | None):
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
    worker.worker_main(settings, tasks, events, cancel_seq)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inject-oom", type=int, default=0)
    parser.add_argument("--hold-load")
    parser.add_argument("server_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    server_args = args.server_args[1:] if args.server_args[:1] == ["--"] else args.server_args

    from fairy_server import backend, cli

    backend.worker_main = functools.partial(_faulty_worker, inject_oom=args.inject_oom, hold_load=args.hold_load)
    return cli.main(server_args)


if __name__ == "__main__":
    sys.exit(main())
