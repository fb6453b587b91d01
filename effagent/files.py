"""Reading and writing the files effagent is pointed at, without hanging, crashing or clobbering.

- :func:`read_text` reads a regular file only (a directory, FIFO, socket or device is refused before it is
  read from, so a FIFO never blocks), up to a size limit, as strict UTF-8 (the error names LINE:COL);
- :func:`write_text` writes a regular file atomically (a temporary file beside it, then a rename): a bad
  target (a directory, a FIFO, a missing parent folder) is refused and an existing file is never half-written;
- :func:`append_line` appends to a regular file without ever blocking (``O_NONBLOCK``; a FIFO is refused);
- :func:`writable_problem` says why a path could not be written (for checks when a policy is loaded).

Each problem is an :class:`InputFileError` whose message is one line that names the file and what to change.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from effagent.errors import EffagentError


class InputFileError(EffagentError):
    """A file given to effagent is not what it should be (missing, not a regular file, too big, not UTF-8,
    or an output that cannot be written); the message is one line."""


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def decode_utf8(data: bytes, source: str) -> str:
    """``data`` as UTF-8 text; an :class:`InputFileError` naming LINE:COL of the first bad byte otherwise."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise InputFileError(f"{source}:{line}:{col}: not UTF-8 text (byte 0x{data[e.start]:02x}); save the file "
                             "as UTF-8") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def json_value(text: str | bytes) -> Any:
    """One JSON document as effagent reads its inputs (a line of a JSON-lines file): strict JSON, ``NaN`` and
    ``Infinity`` refused. Raises ``json.JSONDecodeError`` (not JSON), ``UnicodeDecodeError`` (bytes that are not
    UTF-8), ``ValueError`` or ``RecursionError`` (JSON that cannot be used); the caller says where."""
    return json.loads(text.decode("utf-8") if isinstance(text, bytes) else text, parse_constant=_no_constant)


_Line = TypeVar("_Line", str, bytes)


def json_lines(data: _Line) -> Iterator[tuple[int, _Line]]:
    """The non-blank lines of a JSON-lines input with their line numbers (blank lines count, and are skipped)."""
    sep = b"\n" if isinstance(data, bytes) else "\n"
    for n, raw in enumerate(data.split(sep), 1):  # type: ignore[arg-type]
        if raw.strip():
            yield n, raw


def read_bytes(path: str | os.PathLike[str], what: str = "file", limit: int | None = None) -> bytes:
    """The bytes of a regular file (at most ``limit``: a larger file is refused without reading it all)."""
    p = str(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise InputFileError(f"{p}: cannot read the {what}: no such file") from None
    except OSError as e:
        raise InputFileError(f"{p}: cannot read the {what}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputFileError(f"{p}: is {_kind(st.st_mode)}, not a {what}; give the path of a regular file")
        if limit is not None and st.st_size > limit:
            raise InputFileError(f"{p}: {st.st_size:,} bytes, more than a {what} may have ({limit:,}); "
                                 "is it the right file?")
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if limit is not None and size > limit:
                raise InputFileError(f"{p}: more than {limit:,} bytes, more than a {what} may have")
        return b"".join(chunks)
    except OSError as e:
        raise InputFileError(f"{p}: cannot read the {what}: {e.strerror or e}") from None
    finally:
        os.close(fd)


def read_text(path: str | os.PathLike[str], what: str = "file", limit: int | None = None) -> str:
    """A regular file's text (strict UTF-8; a leading BOM is dropped)."""
    text = decode_utf8(read_bytes(path, what, limit), str(path))
    return text[1:] if text.startswith("\ufeff") else text


def writable_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be written as a regular file (None when it can: it is a writable regular file, or it
    can be created, missing parent folders included)."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        st = None
    except OSError as e:
        return f"cannot use {p}: {e.strerror or e}"
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            return f"{p} is {_kind(st.st_mode)}, not a regular file"
        return None if os.access(p, os.W_OK) else f"{p} is not writable"
    parent = p.absolute().parent
    while True:
        try:
            pst = parent.stat()
        except FileNotFoundError:
            parent = parent.parent
            continue
        except OSError as e:
            return f"cannot create {p}: {parent}: {e.strerror or e}"
        if not stat.S_ISDIR(pst.st_mode):
            return f"cannot create {p}: {parent} is {_kind(pst.st_mode)}"
        return None if os.access(parent, os.W_OK | os.X_OK) else f"cannot create {p}: {parent} is not writable"


def check_output(path: str | os.PathLike[str], what: str = "output file") -> Path:
    """``path`` as a place to write a file: its parent folder exists and it is not a directory or special file."""
    p = Path(path)
    parent = p.absolute().parent
    if not parent.is_dir():
        raise InputFileError(f"{p}: the folder {parent} does not exist; create it first or write the {what} "
                             "elsewhere")
    try:
        st = p.stat()
    except FileNotFoundError:
        return p
    except OSError as e:
        raise InputFileError(f"{p}: cannot write the {what}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputFileError(f"{p}: is {_kind(st.st_mode)}; give a file path for the {what}")
    return p


def write_text(path: str | os.PathLike[str], text: str, what: str = "output file") -> Path:
    """Write ``text`` to ``path`` atomically and durably (a temporary file beside it, fsync'd, renamed over it),
    checked with :func:`check_output` first."""
    p = check_output(path, what)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=str(p.absolute().parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(OSError):
            os.chmod(tmp, 0o644)
        os.replace(tmp, p)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if not isinstance(e, OSError):
            raise
        raise InputFileError(f"{p}: cannot write the {what}: {e.strerror or e}") from None
    return p


def append_line(path: str | os.PathLike[str], line: str) -> None:
    """Append ``line`` (one ``write``) to a regular file, creating it and its folders; never blocks: a FIFO
    or other special file raises :class:`InputFileError` instead."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(str(p), flags, 0o644)
    except OSError as e:  # a FIFO without a reader: ENXIO, at once
        raise InputFileError(f"{p}: cannot append: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputFileError(f"{p}: is {_kind(st.st_mode)}, not a regular file; nothing written")
        data = line.encode("utf-8", "backslashreplace")
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    finally:
        os.close(fd)
