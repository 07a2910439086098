"""One writer per directory: an advisory ``flock`` on ``<dir>/.husai.lock``.

The kernel drops the lock when its process dies (even by SIGKILL), so a lock file left by a
killed run is stale by construction: the next run takes it and says whose it was. The file
holds the holder's pid, command and start time, for the message the second process prints.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from husai.errors import HusaiError

LOCK_FILE = ".husai.lock"


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode(errors="replace").strip() or "unknown process"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def directory_lock(directory: Path, command: str, wait: bool = False) -> Iterator[None]:
    """Hold the directory's lock for the block. Another holder → HusaiError naming it
    (``wait=False``), or block until it is done (``wait=True``: for shared caches)."""
    directory = Path(directory)
    try:
        made = [p for p in (directory, *directory.parents) if not p.exists()]
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise HusaiError(f"{directory}: cannot create its lock file ({e.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise HusaiError(
                f"{directory}: in use by another husai process ({_holder(fd)}); "
                "wait for it to finish or choose another directory"
            ) from None
        previous = _holder(fd)
        pid = previous.split()[1] if previous.startswith("pid ") else ""
        if pid.isdigit() and not pid_alive(int(pid)):
            print(
                f"note: {directory}: stale lock of a stopped process ({previous})", file=sys.stderr
            )
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} (husai {command}, since {stamp})\n".encode(), 0)
        try:
            yield
        except BaseException:
            _unmake(directory, made)
            raise
        os.ftruncate(fd, 0)  # released cleanly: nothing stale to report next time
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _unmake(directory: Path, made: list[Path]) -> None:
    """A command that failed before writing anything leaves no directory behind: remove
    the lock file and the directories the lock made, if they hold nothing else."""
    if not made or [p.name for p in directory.iterdir()] != [LOCK_FILE]:
        return
    (directory / LOCK_FILE).unlink(missing_ok=True)
    for p in made:  # deepest first
        try:
            p.rmdir()
        except OSError:
            return
