"""The journal of records Redis could not take: JSON lines, fsync'd, replayed by record id."""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from effagent.ledger.redis.common import log

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]



def default_journal(key_prefix: str) -> Path:
    """Where a ledger with ``key_prefix`` journals the records Redis could not take, when the policy names no
    file: ``effagent-out/ledger-journal-PREFIX.jsonl`` under the working directory (beside the traces)."""
    return Path("effagent-out", f"ledger-journal-{re.sub(r'[^A-Za-z0-9._-]+', '-', key_prefix)}.jsonl").absolute()


class Journal:
    """Records Redis could not take, one JSON object a line, for the ledger with ``prefix``.

    An append is one ``write`` of the whole line, fsync'd, under an exclusive lock on the journal's folder
    (the workers of one machine may share the file; a POSIX ``flock``). A line is removed only after its
    record was written to Redis, by rewriting the file atomically (temporary file, fsync, rename): a crash
    at any point leaves every unwritten record in the file, and a record written twice is counted once (by
    its id). Lines another prefix wrote stay; unreadable lines (a crash mid-append) go to ``PATH.rejected``.
    When the file cannot be written (read-only, disk full) the record is kept in memory, and logged."""

    def __init__(self, path: Path, prefix: str) -> None:
        self.path = path
        self.prefix = prefix
        self._lock = threading.Lock()
        self._memory: list[dict[str, Any]] = []
        self.unwritable: str | None = None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            if fcntl is None:  # not POSIX: one process per journal file
                yield
                return
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the lock

    def append(self, entry: dict[str, Any]) -> bool:
        """Append ``entry``; True when it is on disk (else kept in memory)."""
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._locked():
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
                try:
                    size = os.fstat(fd).st_size
                    torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"  # a crash mid-append left half a line
                    os.write(fd, (b"\n" if torn else b"") + line)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                if size == 0:
                    _fsync_dir(self.path.parent)
            return True
        except OSError as err:
            with self._lock:
                self._memory.append(entry)
            if self.unwritable is None:
                log.error("effagent: cannot write the ledger journal %s (%s); records Redis could not take are "
                          "kept in this process's memory until it is back", self.path, err)
            self.unwritable = f"{type(err).__name__}: {err}"
            return False

    def pending(self) -> bool:
        if self._memory:
            return True
        try:
            return self.path.stat().st_size > 0
        except OSError:
            return False

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""

    def entries(self) -> list[dict[str, Any]]:
        """This prefix's records, oldest first (the file's, then those kept in memory)."""
        out: list[dict[str, Any]] = []
        if self.path.exists():
            with self._locked():
                raw = self._read()
            for line in raw.splitlines():
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue  # set aside by the next remove()
                if isinstance(obj, dict) and obj.get("prefix") == self.prefix and obj.get("id"):
                    out.append(obj)
        with self._lock:
            out += self._memory
        return out

    def remove(self, ids: set[str]) -> None:
        """Drop the records ``ids`` (written to Redis): rewrite the file atomically without them."""
        with self._lock:
            self._memory = [e for e in self._memory if e.get("id") not in ids]
        if not self.path.exists():
            return
        with self._locked():
            keep: list[bytes] = []
            bad: list[bytes] = []
            for line in self._read().splitlines():
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    bad.append(line)
                    continue
                if isinstance(obj, dict) and obj.get("prefix") == self.prefix and obj.get("id") in ids:
                    continue
                keep.append(line)
            if bad:
                rejected = self.path.with_name(self.path.name + ".rejected")
                with open(rejected, "ab") as f:
                    f.write(b"".join(b + b"\n" for b in bad))
                    f.flush()
                    os.fsync(f.fileno())
                log.error("effagent: %d unreadable line(s) of the ledger journal %s moved to %s", len(bad),
                          self.path, rejected)
            if keep:
                tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
                with open(tmp, "wb") as f:
                    f.write(b"".join(b + b"\n" for b in keep))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            else:
                self.path.unlink(missing_ok=True)
            _fsync_dir(self.path.parent)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

