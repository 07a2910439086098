"""Fault injection at the atomic writes, for the reliability tests (kill anywhere, full
disk, read-only disk, interrupt). Off unless ``HUSAI_FAULT`` is set.

``HUSAI_FAULT="<action>@<n>[:<phase>]"`` injects a fault at this process's n-th atomic
write (1-based):

- action: ``kill`` (SIGKILL to itself: no cleanup runs), ``enospc`` / ``erofs`` (the write
  raises ``OSError`` "no space left on device" / "read-only file system"), ``interrupt``
  (``KeyboardInterrupt``, as Ctrl-C would);
- phase: ``start`` (nothing written yet), ``partial`` (the temp file holds half its bytes;
  the default), ``written`` (the temp file is complete, not yet renamed), ``renamed`` (the
  file is in place, the caller has not gone on); ``copy``: the n-th file copied into a
  directory stage's temp directory (a run's toy model, its links to a cached store), after
  it is copied.

``HUSAI_FAULT_PATH=<glob>`` (fnmatch, on the path as the writer names it) makes n count only
the writes (or copies) whose path matches, e.g. ``*/job.json``: so a rerun that skips the
finished stages can still be stopped at a given stage.

``HUSAI_FAULT_LOG=FILE`` appends one line ``<n>\\t<path>`` per atomic write, so a test can
count a command's writes and spread fault points over them.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import signal
from pathlib import Path

PHASES = ("start", "partial", "written", "renamed", "copy")
ACTIONS = ("kill", "enospc", "erofs", "interrupt")
_ERRNO = {"enospc": errno.ENOSPC, "erofs": errno.EROFS}
_count = 0  # atomic writes (the log's numbering)
_counts = {"write": 0, "copy": 0}  # the writes / copies that match HUSAI_FAULT_PATH


def _plan() -> tuple[str, int, str] | None:
    spec = os.environ.get("HUSAI_FAULT")
    if not spec:
        return None
    action, _, rest = spec.partition("@")
    n, _, phase = rest.partition(":")
    phase = phase or "partial"
    if action not in ACTIONS or not n.isdigit() or int(n) < 1 or phase not in PHASES:
        raise ValueError(
            f"HUSAI_FAULT={spec!r}: expected <{'|'.join(ACTIONS)}>@<n>[:<{'|'.join(PHASES)}>]"
        )
    return action, int(n), phase


def _matching(kind: str, path: Path) -> int:
    """The number of this write / copy among those matching ``HUSAI_FAULT_PATH`` (0: no match)."""
    glob = os.environ.get("HUSAI_FAULT_PATH")
    if glob and not fnmatch.fnmatchcase(str(path), glob):
        return 0
    _counts[kind] += 1
    return _counts[kind]


def next_write(path: Path) -> int:
    """Count one atomic write (and log it when ``HUSAI_FAULT_LOG`` is set); returns the
    number that `point` compares with the planned n."""
    global _count
    _count += 1
    log = os.environ.get("HUSAI_FAULT_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{_count}\t{path}\n")
    return _matching("write", path)


def copied(path: Path) -> None:
    """A directory stage copied one file to `path` (its temp directory): the ``copy`` point."""
    if os.environ.get("HUSAI_FAULT"):
        point(_matching("copy", path), "copy")


def point(n: int, phase: str, tmp: Path | None = None) -> None:
    """Inject the planned fault if this is its write and phase."""
    plan = _plan()
    if plan is None or plan[1] != n or plan[2] != phase:
        return
    if phase == "partial" and tmp is not None and tmp.is_file():
        with open(tmp, "r+b") as f:
            f.truncate(tmp.stat().st_size // 2)
    action = plan[0]
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action in _ERRNO:
        code = _ERRNO[action]
        raise OSError(code, os.strerror(code), str(tmp or ""))
    raise KeyboardInterrupt
