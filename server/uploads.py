"""Uploaded media, for a server on another machine than the editor.

The header (file name, size, SHA-256) is checked before any data is accepted;
data goes to a temporary file in the uploads folder and is renamed into
``uploads/<sha256>/<name>`` only when its size and checksum match. The upload
id is the content's SHA-256, so the same file uploaded twice is stored once.
"""

from __future__ import annotations

import hashlib
import pathlib
import re
import shutil

from fairy_proto.files import TEMPORARY_GLOB, StagedPath

from .errors import InvalidRequestError, NotFoundError, ResourceExhaustedError
from .paths import MEDIA_EXTENSIONS, shown

__all__ = ["UploadStore", "UploadWriter"]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_DISK_MARGIN = 256 * 1024 * 1024


class UploadWriter:
    def __init__(self, store: "UploadStore", name: str, total_size: int, sha256: str):
        self._store = store
        self.name = name
        self.total_size = total_size
        self.sha256 = sha256
        self.received = 0
        self._digest = hashlib.sha256()
        # A hidden temporary in the uploads folder (fairy_proto.files), renamed to <sha256>/<name> once it
        # checks out; that folder is made only then.
        self._staged = StagedPath(store.folder / sha256 / name, folder=store.folder, overwrite=True, fsync=True)
        self._file = self._staged.open("wb")

    def write(self, data: bytes) -> None:
        if self.received + len(data) > self.total_size:
            raise InvalidRequestError(f"the upload is larger than its header's total_size ({self.total_size} bytes)")
        self._file.write(data)
        self._digest.update(data)
        self.received += len(data)

    def commit(self) -> str:
        """Check size and checksum, publish, return the upload id."""
        try:
            if self.received != self.total_size:
                raise InvalidRequestError(f"the upload ended after {self.received} of {self.total_size} bytes")
            actual = self._digest.hexdigest()
            if actual != self.sha256:
                raise InvalidRequestError(f"the upload's SHA-256 is {actual}, not {self.sha256} as announced")
            folder = self._store.folder / actual
            if folder.is_dir() and any(folder.iterdir()):
                return actual  # the same content is already here
            folder.mkdir(exist_ok=True)
            self._staged.commit()  # flushed to the disk, then renamed to folder/name
            return actual
        finally:
            self.abort()

    def abort(self) -> None:
        self._staged.discard()  # nothing to do after a commit


class UploadStore:
    def __init__(self, folder: pathlib.Path, max_bytes: int):
        self.folder = pathlib.Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        for pattern in (TEMPORARY_GLOB, ".tmp-upload-*"):  # from an interrupted upload (and older servers)
            for stale in self.folder.glob(pattern):
                stale.unlink(missing_ok=True)

    def begin(self, filename: str, total_size: int, sha256: str) -> UploadWriter:
        name = filename
        if not name or "\x00" in name or "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
            raise InvalidRequestError(f"header.filename must be a plain file name: {shown(filename)}")
        if len(name.encode()) > 200:
            raise InvalidRequestError("header.filename is longer than 200 bytes")
        if pathlib.PurePath(name).suffix.lower() not in MEDIA_EXTENSIONS:
            raise InvalidRequestError(f"header.filename is not a video file: {shown(filename)}")
        if total_size <= 0:
            raise InvalidRequestError(f"header.total_size must be at least 1, got {total_size}")
        if total_size > self.max_bytes:
            raise ResourceExhaustedError(f"the upload is {total_size} bytes; this server takes at most {self.max_bytes}")
        if not _SHA256.fullmatch(sha256 or ""):
            raise InvalidRequestError("header.sha256 must be 64 lowercase hex digits")
        if shutil.disk_usage(self.folder).free < total_size + _DISK_MARGIN:
            raise ResourceExhaustedError("the server's disk has no room for this upload")
        return UploadWriter(self, name, total_size, sha256)

    def path_of(self, upload_id: str) -> pathlib.Path:
        if not _SHA256.fullmatch(upload_id):
            raise InvalidRequestError(f"not an upload id: {shown(upload_id)}")
        folder = self.folder / upload_id
        files = [p for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
        if not files:
            raise NotFoundError(f"no upload {upload_id} on this server (upload the file again)")
        return files[0]
