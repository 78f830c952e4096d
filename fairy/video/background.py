"""Decoding ahead and encoding behind, in threads, so the model never waits for the video codecs.

PyAV's decoders and encoders release the GIL, so a thread of each overlaps
them with the model's work (on a GPU: with all of it). Both keep order, so a
clip comes out byte for byte as it does without them; an error in a thread is
raised in the caller at its next call, and leaving early (an error, a cancel)
stops both threads without writing anything more.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator

__all__ = ["prefetched", "BackgroundWrites"]

_DONE = object()


def prefetched(items: Iterable, depth: int = 8) -> Iterator:
    """The items of ``items``, produced up to ``depth`` ahead by a thread of its own."""
    ahead: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        ahead.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ahead.put((True, _DONE))
        except BaseException as exc:  # handed to the consumer, which raises it
            ahead.put((False, exc))

    thread = threading.Thread(target=produce, name="fairy-decode", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = ahead.get()
            if not ok:
                raise item
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                ahead.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()


class BackgroundWrites:
    """Calls ``write(item)`` for each item given to :meth:`put`, in order, in a thread of its own.

    Use as a context manager: leaving it normally waits until every item is
    written (and raises a writer's error); leaving with an exception drops what
    is still queued.
    """

    def __init__(self, write: Callable[[object], None], depth: int = 8):
        self._write = write
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._abandon = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fairy-encode", daemon=True)

    def __enter__(self) -> BackgroundWrites:
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE or self._abandon.is_set():
                return
            if self._error is None:
                try:
                    self._write(item)
                except BaseException as exc:  # raised in the caller at its next put, or on leaving
                    self._error = exc

    def put(self, item) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._abandon.set()
        while True:  # the end marker, even past a full queue of abandoned items
            try:
                self._queue.put(_DONE, timeout=0.1)
                break
            except queue.Full:
                if self._abandon.is_set():
                    try:
                        self._queue.get_nowait()
                    except queue.Empty:
                        pass
        self._thread.join()
        if exc_type is None and self._error is not None:
            raise self._error
