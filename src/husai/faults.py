"""Fault injection at the atomic writes, for the reliability tests (kill anywhere, full
disk, read-only disk, interrupt). Off unless ``HUSAI_FAULT`` is set.

``HUSAI_FAULT="<action>@<where>[:<phase>]"`` injects a fault at one atomic write of this
process: ``<where>`` is ``n`` (its n-th write, 1-based) or ``text[#k]`` (the k-th write,
default the first, whose path contains ``text``, e.g. ``enospc@seed_2/cfg.json:written``).

- action: ``kill`` (SIGKILL to itself: no cleanup runs), ``enospc`` / ``erofs`` (the write
  raises ``OSError`` "no space left on device" / "read-only file system"), ``interrupt``
  (``KeyboardInterrupt``, as Ctrl-C would);
- phase: ``start`` (nothing written yet), ``partial`` (the temp file holds half its bytes;
  the default), ``written`` (the temp file is complete, not yet renamed), ``renamed`` (the
  file is in place, the caller has not gone on).

``HUSAI_FAULT_LOG=FILE`` appends one line ``<n>\\t<path>`` per atomic write, so a test can
count a command's writes and spread fault points over them.
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

PHASES = ("start", "partial", "written", "renamed")
ACTIONS = ("kill", "enospc", "erofs", "interrupt")
_ERRNO = {"enospc": errno.ENOSPC, "erofs": errno.EROFS}
_count = 0
_hits: dict[str, int] = {}  # writes whose path matched each pattern so far
_target: int | None = None  # the write the planned fault is for, once known


def _plan() -> tuple[str, str, int, str] | None:
    """(action, pattern or "", n or k, phase) of ``HUSAI_FAULT``, or None."""
    spec = os.environ.get("HUSAI_FAULT")
    if not spec:
        return None
    action, _, rest = spec.rpartition("@") if "@" in spec else ("", "", "")
    where, _, phase = rest.rpartition(":") if ":" in rest else (rest, "", "partial")
    text, _, k = where.rpartition("#") if "#" in where else (where, "", "1")
    pattern, n = ("", text) if text.isdigit() else (text, k)
    if action not in ACTIONS or not where or not n.isdigit() or phase not in PHASES:
        raise ValueError(
            f"HUSAI_FAULT={spec!r}: expected <{'|'.join(ACTIONS)}>@<n | text[#k]>"
            f"[:<{'|'.join(PHASES)}>]"
        )
    return action, pattern, int(n), phase


def next_write(path: Path) -> int:
    """Count one atomic write (and log it when ``HUSAI_FAULT_LOG`` is set)."""
    global _count, _target
    _count += 1
    log = os.environ.get("HUSAI_FAULT_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{_count}\t{path}\n")
    plan = _plan()
    if plan is not None and plan[1] and plan[1] in str(path):
        _hits[plan[1]] = _hits.get(plan[1], 0) + 1
        if _hits[plan[1]] == plan[2]:
            _target = _count
    return _count


def point(n: int, phase: str, tmp: Path | None = None) -> None:
    """Inject the planned fault if this is its write and phase."""
    plan = _plan()
    if plan is None or plan[3] != phase or n != (_target if plan[1] else plan[2]):
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
