"""Files that appear complete or not at all: written under a hidden temporary name beside the target, then renamed.

Nobody sees half a file: not an editor relinking a result, not a server listing its uploads, not a file
browser. The data goes to a hidden temporary name in the target's own folder (so the rename stays on one
file system, where :func:`os.replace` is atomic), and only a write that finished is renamed onto the target.
A write that fails (any exception, KeyboardInterrupt included) removes the temporary and leaves the target
as it was.

An open file, for code that writes the bytes itself::

    with atomic_write(path, "w", overwrite=True) as f:
        json.dump(data, f)

A temporary path, for writers that open the file (or make the folder) themselves: PyAV, OTIO adapters,
``torch.save``, ``save_pretrained``. Nothing is there yet, and the name ends in the target's suffix, so a
writer that picks its format by suffix picks the right one::

    with atomic_path(path) as temp:
        otio.adapters.write_to_file(timeline, str(temp))

:class:`StagedPath` is the same as an object, for a write that spans several calls (an encoder's
``__enter__`` and ``__exit__``, an upload that arrives in chunks): :meth:`~StagedPath.commit` or
:meth:`~StagedPath.discard` it.

Without ``overwrite`` an existing target is never replaced: :class:`FileExistsError` (naming the path) when
the write starts, and again at the rename if the target appeared meanwhile. A finished file has the mode
any new file of the process gets (0666 less the umask, or what the folder's default ACL says), not
:func:`tempfile.mkstemp`'s 0600: results land in media folders that editors share.

Standard library only: the model library, the server, the plugin and the Blender extension (which bundles
``fairy_proto``) all use it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import secrets
import shutil
from collections.abc import Iterator
from typing import IO, Union

__all__ = ["StagedPath", "atomic_path", "atomic_write", "current_umask", "new_file_mode", "TEMPORARY_GLOB"]

PathLike = Union[str, os.PathLike]

# Every temporary name is ".STEM.partial-RANDOM.SUFFIX": this finds the ones a killed process left behind.
TEMPORARY_GLOB = ".*.partial-*"
_NAME_MAX_BYTES = 255
_WRITE_MODES = frozenset({"w", "wb", "wt", "w+", "w+b", "wb+", "w+t", "wt+"})


def current_umask() -> int:
    """The process umask, read without changing it (:func:`os.umask` can only set it, which races with
    every thread that creates a file meanwhile). Linux reports it in /proc/self/status; elsewhere this is
    0o022, the usual one."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    return 0o022


def new_file_mode() -> int:
    """The mode a new file of this process gets: 0o666 less the umask."""
    return 0o666 & ~current_umask()


class StagedPath:
    """A hidden temporary name beside ``target``; :meth:`commit` renames what was written there onto it.

    ``path`` is the temporary name, and nothing is there yet: :meth:`open` a file at it, or hand it to a
    writer that creates a file or a folder of its own. As a context manager (yielding itself) it commits
    when the block ends normally and discards when it raises.

    ``overwrite``: replace an existing target; without it an existing target raises FileExistsError now
    and at :meth:`commit`. ``file_mode``: chmod a finished file to this before the rename (None keeps the
    mode it was created with, the mode of any new file). ``fsync``: flush the file (and then the rename)
    to the disk before returning, for files a crash must not lose. ``folder``: where the temporary goes
    when it must not be beside the target (for example while the target's folder does not exist yet); it
    has to be on the target's file system.
    """

    def __init__(self, target: PathLike, *, overwrite: bool = False, file_mode: int | None = None,
                 fsync: bool = False, folder: PathLike | None = None):
        self.target = pathlib.Path(target)
        self.overwrite = overwrite
        self.file_mode = file_mode
        self.fsync = fsync
        self._folder = pathlib.Path(folder) if folder is not None else self.target.parent
        if not overwrite:
            self._refuse_existing()
        self.path = self._folder / _temporary_name(self.target)
        self._file: IO | None = None
        self._finished = False

    def __repr__(self) -> str:
        return f"StagedPath({str(self.target)!r}, temporary={self.path.name!r})"

    def open(self, mode: str = "wb", *, encoding: str | None = None, newline: str | None = None) -> IO:
        """Create the temporary file and open it for writing (``"wb"``, or ``"w"`` for text, UTF-8 unless
        ``encoding`` says otherwise). :meth:`commit` closes it if it is still open."""
        if mode not in _WRITE_MODES:
            raise ValueError(f"mode must be 'wb' or 'w' (optionally with '+'), got {mode!r}")
        if self._finished or self._file is not None:
            raise RuntimeError(f"{self!r} was already opened, committed or discarded")
        if "b" not in mode and encoding is None:
            encoding = "utf-8"
        exclusive = "x" + mode[1:]  # never opens a file that is already there
        for _attempt in range(100):
            try:
                self._file = open(self.path, exclusive, encoding=encoding, newline=newline)
                return self._file
            except FileExistsError:
                self.path = self._folder / _temporary_name(self.target)
        raise FileExistsError(errno.EEXIST, "no free temporary name", str(self._folder))

    def commit(self) -> pathlib.Path:
        """Rename the finished temporary (file or folder) onto the target; returns the target. If that
        fails (the target appeared without ``overwrite``, nothing was written, a disk error) the
        temporary is removed, the target is left as it was, and the error is raised."""
        if self._finished:
            raise RuntimeError(f"{self!r} was already committed or discarded")
        try:
            file, self._file = self._file, None
            if file is not None and not file.closed:
                with file:
                    if self.fsync:
                        file.flush()
                        os.fsync(file.fileno())
            elif self.fsync and self.path.is_file():
                _fsync_file(self.path)
            if not os.path.lexists(self.path):
                raise FileNotFoundError(errno.ENOENT, f"nothing was written for {self.target}", str(self.path))
            is_folder = self.path.is_dir() and not self.path.is_symlink()
            if self.file_mode is not None and not is_folder:
                os.chmod(self.path, self.file_mode)
            if not self.overwrite:
                self._refuse_existing()
            if is_folder and self.target.is_dir() and not self.target.is_symlink():
                self._replace_folder()
            else:
                os.replace(self.path, self.target)
            self._finished = True
        except BaseException:
            self.discard()
            raise
        if self.fsync:
            _fsync_folder(self.target.parent)
        return self.target

    def discard(self) -> None:
        """Close and remove the temporary (file or folder); the target is left as it was. Never raises,
        and does nothing after :meth:`commit` or a first discard."""
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(Exception):
                file.close()
        if self._finished:
            return
        self._finished = True
        _remove(self.path)

    def __enter__(self) -> StagedPath:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()

    def _refuse_existing(self) -> None:
        if os.path.lexists(self.target):
            raise FileExistsError(f"{self.target} already exists (pass overwrite=True to replace it)")

    def _replace_folder(self) -> None:
        # os.replace cannot put a folder over one that has files: move the old one aside first, and
        # back if the new one cannot take its place.
        aside = self.target.parent / _temporary_name(self.target)
        os.rename(self.target, aside)
        try:
            os.rename(self.path, self.target)
        except BaseException:
            os.rename(aside, self.target)
            raise
        shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(target: PathLike, *, overwrite: bool = False, file_mode: int | None = None,
                fsync: bool = False) -> Iterator[pathlib.Path]:
    """Yield a temporary path beside ``target`` (nothing there yet, same suffix) for a writer to create a
    file or a folder at; when the block ends normally it is renamed onto ``target``, when it raises it is
    removed. Arguments as for :class:`StagedPath`."""
    staged = StagedPath(target, overwrite=overwrite, file_mode=file_mode, fsync=fsync)
    try:
        yield staged.path
    except BaseException:
        staged.discard()
        raise
    staged.commit()


@contextlib.contextmanager
def atomic_write(target: PathLike, mode: str = "wb", *, overwrite: bool = False, file_mode: int | None = None,
                 fsync: bool = False, encoding: str | None = None, newline: str | None = None) -> Iterator[IO]:
    """Yield a file open for writing at a temporary name beside ``target``; when the block ends normally
    the file is closed and renamed onto ``target``, when it raises it is removed. ``mode`` is ``"wb"`` or
    ``"w"`` (text, UTF-8 unless ``encoding`` says otherwise); the other arguments are :class:`StagedPath`'s."""
    staged = StagedPath(target, overwrite=overwrite, file_mode=file_mode, fsync=fsync)
    try:
        yield staged.open(mode, encoding=encoding, newline=newline)
    except BaseException:
        staged.discard()
        raise
    staged.commit()


def _temporary_name(target: pathlib.Path) -> str:
    """".STEM.partial-RANDOM.SUFFIX": hidden, recognisable, and with the target's suffix; the stem is cut
    so the name stays within the 255 bytes file systems allow."""
    suffix = target.suffix
    stem = target.name[: len(target.name) - len(suffix)]
    tail = f".partial-{secrets.token_hex(6)}{suffix}"
    room = max(0, _NAME_MAX_BYTES - 1 - len(os.fsencode(tail)))
    encoded = os.fsencode(stem)
    if len(encoded) > room:
        stem = encoded[:room].decode("utf-8", "ignore")
    return f".{stem}{tail}"


def _remove(path: pathlib.Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _fsync_file(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))  # Windows' fsync needs a writable handle
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: pathlib.Path) -> None:
    """Make a rename in ``folder`` durable where the system allows it (not on Windows: no folder handles)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
