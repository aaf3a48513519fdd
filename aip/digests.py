"""MD5 of streamed content, computed in a worker thread so that hashing overlaps the copy.

CPython's hashlib releases the GIL while it hashes a buffer of 2 KiB or more
(``HASHLIB_GIL_MINSIZE`` in Modules/hashlib.h), as do file reads and writes and
``zlib.crc32`` on large buffers. On a machine with two or more cores the MD5 of
one chunk is then computed while the next chunk is read, checked against its
CRC-32 and written, instead of after it.
"""
from __future__ import annotations

import hashlib
import queue
import threading

# Chunks waiting for the worker thread; with 1 MiB chunks at most this many MiB are queued.
QUEUED_CHUNKS = 4


class BackgroundMd5:
    """An MD5 that hashes the first chunk at once and every later chunk in a worker thread.

    Content of one chunk (most files of a repository) never starts a thread. Use it
    as a context manager, so that leaving the block stops the thread, also after an
    error. Chunks must be ``bytes``, because the thread reads them after ``update``
    has returned.
    """

    def __init__(self) -> None:
        self._md5 = hashlib.md5()
        self._first_hashed = False
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=QUEUED_CHUNKS)
        self._thread: threading.Thread | None = None
        self._error: Exception | None = None

    def __enter__(self) -> BackgroundMd5:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def update(self, chunk: bytes) -> None:
        # Readers end with an empty chunk, which must not start a thread for a file of one chunk.
        if not chunk:
            return
        if not self._first_hashed:
            self._md5.update(chunk)
            self._first_hashed = True
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._hash_queued, name="md5", daemon=True)
            self._thread.start()
        self._chunks.put(chunk)

    def hexdigest(self) -> str:
        """Wait until every chunk is hashed, then return the MD5 as hexadecimal text."""
        self.close()
        if self._error is not None:
            raise self._error
        return self._md5.hexdigest()

    def _hash_queued(self) -> None:
        # The thread keeps taking chunks after an error, because ``update`` would otherwise wait
        # for good on a full queue.
        while (chunk := self._chunks.get()) is not None:
            if self._error is None:
                try:
                    self._md5.update(chunk)
                except Exception as error:
                    self._error = error

    def close(self) -> None:
        """Stop the worker thread once it has hashed every queued chunk."""
        if self._thread is not None:
            self._chunks.put(None)
            self._thread.join()
            self._thread = None
