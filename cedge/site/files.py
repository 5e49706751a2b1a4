"""Writing site files: atomically, with private keys never readable by anyone but the owner.

Why atomic (write a temporary file in the same directory, fsync, rename): the broker re-reads its
ACL and CRL on SIGHUP and a unit reads its certificate at start; a half-written file would lock
units out or, worse, be read as an empty ACL.  Why the mode is set at creation (``os.open`` with
0600) and not by a later ``chmod``: a key must never exist on disk with a wider mode, not even
for a moment (umask only narrows modes, it cannot be relied on to do so).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644


def write_atomic(path: str | Path, data: bytes | str, mode: int = PUBLIC_MODE) -> Path:
    """Write ``data`` to ``path`` via a same-directory temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        os.fchmod(fd, mode)  # O_CREAT's mode is masked by umask and ignored for an existing file
        with os.fdopen(fd, "wb") as f:
            fd = -1
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def write_private(path: str | Path, data: bytes | str) -> Path:
    """A private key or other secret: mode 0600 from the moment it exists."""
    return write_atomic(path, data, PRIVATE_MODE)
