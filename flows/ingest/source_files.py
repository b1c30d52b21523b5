"""Each source object read once: the reader gets exactly the version that was listed, and its SHA-256.

The ingest version is named by each object's key, size and ETag when the ingest starts. Every read here
is conditional on that ETag (``IfMatch``), so the rows ingested come from the object as listed, or the
ingest stops with what to do; and the bytes the reader takes are hashed as they pass, so the manifest's
SHA-256 is of exactly what was ingested. (It was a second read of every object beside the ingest before:
for 160 MB of CSV, about a second of the S3 server's CPU and of ours, on the same two cores.)

Text files (CSV, JSONL, compressed or not) stream straight from the response body; a Parquet file, which
is read from its footer backwards, is first downloaded to a private local folder (hashed on the way) and
read from there. :class:`SourceFiles` is a ``pyarrow.fs`` filesystem over one object, so the reader
(:func:`flows.ingest.read.iter_batches`) works on it unchanged.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from flows.core.s3 import ObjectStore, parse_uri

_CHUNK = 8 << 20


class _HashedBody:
    """A response body as a read-only file: what is read goes through SHA-256 too."""

    def __init__(self, body: Any) -> None:
        self._body = body
        self.sha256 = hashlib.sha256()
        self.closed = False
        self.eof = False

    def read(self, nbytes: int = -1) -> bytes:
        data: bytes = self._body.read(None if nbytes is None or nbytes < 0 else nbytes)
        if data:
            self.sha256.update(data)
        elif nbytes != 0:
            self.eof = True
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        # The reader may stop before the end (a broken file): the rest is still read for the hash, by
        # :meth:`drain`, which also closes the body.
        self.closed = True

    def drain(self) -> str:
        """Read what the reader left, and return the SHA-256 of the whole object."""
        while not self.eof:
            self.read(_CHUNK)
        self._body.close()
        return self.sha256.hexdigest()

    def abort(self) -> None:
        """Drop the response without reading the rest (its hash is then of no use)."""
        if not self.eof:
            self._body.close()


class _SourceHandler(pafs.FileSystemHandler):
    """One object of the store, read only at its listed ETag; every other call is refused."""

    def __init__(self, source: SourceFiles) -> None:
        self._source = source

    def __eq__(self, other: object) -> bool:
        return other is self

    def __ne__(self, other: object) -> bool:
        return other is not self

    def __hash__(self) -> int:
        return id(self)

    def equals(self, other: Any) -> bool:
        return other is self

    def get_type_name(self) -> str:
        return "kazi-source"

    def normalize_path(self, path: str) -> str:
        return path

    def open_input_stream(self, path: str) -> pa.NativeFile:
        return pa.PythonFile(self._source.stream(path), mode="r")

    def open_input_file(self, path: str) -> pa.NativeFile:
        return pa.OSFile(str(self._source.download(path)), "r")

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError(f"{self._source.uri} is a client's source object: Kazi only reads it")

    get_file_info = get_file_info_selector = create_dir = delete_dir = delete_dir_contents = _refuse
    delete_root_dir_contents = delete_file = move = copy_file = _refuse
    open_output_stream = open_append_stream = _refuse


class SourceFiles:
    """A source object (``uri`` at ``etag``) as a ``pyarrow.fs`` filesystem holding one path, :attr:`path`.

    Use as a context manager; after the reader is done, :meth:`sha256` is the object's SHA-256. The first
    GET is made on entering, so an object replaced since it was listed fails there
    (:class:`~flows.core.s3.PreconditionFailed`, which says what to do), not as an unreadable file.

    Args:
        store: The S3 adapter.
        uri: ``s3://bucket/key`` of the object.
        etag: Its ETag when it was listed.
        staging_dir: Parent of the private folder a Parquet file is downloaded to (default: the system's
            temporary folder).
    """

    def __init__(self, store: ObjectStore, uri: str, etag: str, *, staging_dir: Path | None = None) -> None:
        self._store = store
        self.uri = uri
        self.bucket, self.key = parse_uri(uri)
        self.etag = etag
        self.path = f"{self.bucket}/{self.key}"
        self.fs = pafs.PyFileSystem(_SourceHandler(self))
        self._staging_dir = staging_dir
        self._folder: Path | None = None
        self._first: _HashedBody | None = None
        self._last: _HashedBody | None = None
        self._local: Path | None = None
        self._digest: str | None = None

    def __enter__(self) -> SourceFiles:
        self._first = _HashedBody(self._store.open_version(self.bucket, self.key, self.etag))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for body in (self._first, self._last):
            if body is not None:
                body.abort()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    def _check(self, path: str) -> None:
        if path != self.path:
            raise FileNotFoundError(f"{path}: only {self.path} is open here")

    def stream(self, path: str) -> _HashedBody:
        """The object's bytes from the start; a second call (a reader starting over) makes a new GET."""
        self._check(path)
        if self._first is not None:
            body, self._first = self._first, None
        else:
            if self._last is not None:
                self._last.abort()
            body = _HashedBody(self._store.open_version(self.bucket, self.key, self.etag))
        self._last = body
        return body

    def download(self, path: str) -> Path:
        """The whole object in a local file (once), for random access."""
        self._check(path)
        if self._local is None:
            if self._folder is None:
                self._folder = Path(tempfile.mkdtemp(prefix="kazi-source-", dir=self._staging_dir))
            local = self._folder / "object"
            body = self.stream(path)
            with local.open("wb") as out:
                while chunk := body.read(_CHUNK):
                    out.write(chunk)
            self._digest = body.drain()
            self._local = local
        return self._local

    def sha256(self) -> str:
        """SHA-256 of the object: of what the reader took, and the rest of the object read to its end."""
        if self._digest is None:
            body = self._last or self._first
            if body is None:  # pragma: no cover - the context manager opens the first body
                raise RuntimeError("SourceFiles used outside its context")
            self._digest = body.drain()
        return self._digest
