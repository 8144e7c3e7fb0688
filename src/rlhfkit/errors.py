"""The one exception type that means "the user gave us something we cannot use", and the readers that raise it.

The CLI turns a UserError into a single line on stderr and exit status 2; every
other exception is a bug and keeps its traceback (behind `--debug`). Text
files the user hands us (data, configs) are read through `read_text`, so that
bytes that are not UTF-8 name the file, the line and the byte offset instead
of surfacing as a `UnicodeDecodeError` from deep inside a reader.
"""

from __future__ import annotations

import errno
from pathlib import Path

# errno values that mean "this path cannot be used as given": reported as one line naming the path.
USER_PATH_ERRNOS = {
    errno.ENOENT: "no such file or directory",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EISDIR: "is a directory, not a file",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EEXIST: "already exists",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENAMETOOLONG: "file name too long",
}


class UserError(Exception):
    """Bad input: the message names the file, line or field, what was found and what was expected."""


def decode_utf8(raw: bytes, name: str) -> str:
    """`raw` as text; a leading UTF-8 byte-order mark is dropped (editors on Windows write one).

    Anything else that is not UTF-8 is refused, naming the line (1-based) and the byte offset
    of the first bad byte, because a silent replacement character would end up in training data.
    """
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise UserError(
            f"{name}:{line}: not UTF-8 text (byte 0x{raw[error.start]:02x} at byte offset {error.start}); "
            "save the file as UTF-8"
        ) from None


def read_text(path: str | Path) -> str:
    """The UTF-8 text of a file the user named; unreadable files and undecodable bytes are UserErrors."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise UserError(describe_os_error(error, path)) from None
    return decode_utf8(raw, str(path))


def describe_os_error(error: OSError, path: str | Path | None = None) -> str:
    """One line naming the path and what is wrong with it, e.g. `out/x: permission denied`."""
    culprit = path if path is not None else error.filename
    reason = USER_PATH_ERRNOS.get(error.errno or 0, error.strerror or type(error).__name__)
    return f"{culprit}: {reason}" if culprit is not None else reason


def one_line(text: str) -> str:
    """`text` with its lines joined by spaces: what the CLI prints must be a single line."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def summarize(error: BaseException, limit: int = 300) -> str:
    """`ExcType: message` on one line (cut at `limit` characters), for reports of errors raised by libraries."""
    text = one_line(str(error))
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
