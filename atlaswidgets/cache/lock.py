"""One writer at a time: the lock file a process holds in a store while it writes it.

A writer (``capture(..., store=path)``, ``cache.save(path)``) opens ``<store>/.atlaswidgets.lock``
and takes an exclusive ``flock`` on it, then writes its identity (pid, host, start time) into it.
The kernel drops the lock when the process ends, however it ends (kill -9 included), so a dead
writer's lock needs no clean-up: the next writer takes it. A second writer while the first lives
is refused with a message naming the holder. Readers take no lock (see ``store.load_cache``).

Where ``fcntl`` is missing (Windows) the file's existence is the lock (created with O_EXCL); a
lock whose pid is gone on this host is recovered, one of another host is left for its owner.

A re-save writes the new store in a sibling directory (``files.replace_dir``): the writer takes
the lock in it too before the swap, so the store's name never shows a store without its lock.
The lock file is removed when the writer releases it, so a finished store holds no lock file.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

__all__ = ["LOCK", "StoreLock", "clear_stale", "lock_store"]

LOCK = ".atlaswidgets.lock"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class StoreLock:
    """The lock of a store held by this process; ``release()`` gives it back (idempotent)."""

    def __init__(self, path: Path, action: str):
        self.path, self.action = path, action
        self.identity = {"pid": os.getpid(), "host": socket.gethostname(),
                         "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.held: list[tuple[Path, int]] = []  # (lock file, fd): the store's, then a re-save's
        self.created = False  # the store directory was made for this lock

    def take(self, directory: Path) -> None:
        """Take the lock file in ``directory`` (the store, or the new store of a re-save)."""
        file = directory / LOCK
        for _ in range(50):  # another writer may be releasing (unlinking) the file we opened
            fd = _open(file, exclusive=fcntl is None)
            if fd is None:  # no fcntl, and the file exists: held, unless its writer is gone
                holder = _holder(file)
                if _gone(holder):
                    _unlink_if(file, holder)
                    continue
                raise self._refusal(holder, file)
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as e:
                    os.close(fd)
                    if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                    raise self._refusal(_holder(file), file) from None
                if not _same_file(fd, file):  # locked a file its holder had just unlinked
                    os.close(fd)
                    continue
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(self.identity, sort_keys=True).encode("utf-8"))
            os.fsync(fd)
            self.held.append((file, fd))
            return
        raise OSError(f"Could not take the lock {str(file)!r}: it kept changing under this process.")

    def release(self) -> None:
        """Remove the lock files this process holds and give the locks back."""
        while self.held:
            file, fd = self.held.pop()
            try:
                # a re-save's lock file now lies in the store, under the store's name
                for name in (file, self.path / LOCK):
                    if _same_file(fd, name):
                        name.unlink(missing_ok=True)  # while still locked: no one else holds it
                        break
            finally:
                os.close(fd)
        if self.created:  # nothing was written (the capture failed early): leave no empty store
            self.created = False
            try:
                os.rmdir(self.path)
            except OSError:
                pass

    def _refusal(self, holder: dict, file: Path) -> ValueError:
        who = (f"process {holder.get('pid')} on host {holder.get('host')!r}, since {holder.get('started')}"
               if holder else "another process (it has not written its name yet)")
        stale = ("" if fcntl is not None else
                 f" If that process has ended on another machine, delete {str(file)!r}.")
        return ValueError(
            f"The store at {str(self.path)!r} is being written by {who}; one writer at a time. "
            f"Wait until it finishes, or use another path for {self.action}.{stale}"
        )

    def __enter__(self) -> StoreLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_store(path: Path, action: str) -> StoreLock:
    """Take the write lock of the store at ``path`` (made as an empty directory when absent).

    Raises ValueError naming the holder when another live process writes the store.
    """
    lock = StoreLock(path, action)
    if not path.exists():
        path.mkdir(parents=True, exist_ok=True)
        lock.created = True
    try:
        lock.take(path)
    except OSError as e:
        lock.release()
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and not lock.created:
            # a store this process may not write to (a shared, read-only copy): reusing it whole
            # writes nothing, and a write that is needed fails on its own, as before
            return StoreLock(path, action)
        raise
    except BaseException:
        lock.release()
        raise
    return lock


def clear_stale(directory: Path) -> None:
    """Remove a lock file no live process holds (a dead writer's), e.g. in a store put back by
    ``files.recover``; a held one stays."""
    if not os.path.lexists(directory / LOCK):
        return
    lock = StoreLock(directory, "")
    try:
        lock.take(directory)
    except (OSError, ValueError):
        return
    lock.release()


# ----------------------------------------------------------------------------- helpers


def _open(file: Path, exclusive: bool) -> int | None:
    flags = os.O_RDWR | os.O_CREAT | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    if exclusive:
        flags |= os.O_EXCL
    try:
        return os.open(file, flags, 0o644)
    except FileExistsError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:  # a symlink planted at the lock's name
            raise ValueError(f"{str(file)!r} is a symbolic link, not a lock file; delete it.") from None
        raise


def _same_file(fd: int, file: Path) -> bool:
    try:
        now = os.lstat(file)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino)


def _holder(file: Path) -> dict:
    """The identity a lock file holds; {} when unreadable or not yet written."""
    try:
        with open(file, "rb") as f:
            holder = json.loads(f.read(4096).decode("utf-8"))
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _gone(holder: dict) -> bool:
    """Whether a lock's writer has ended: only knowable for a pid on this host (POSIX)."""
    if holder.get("host") != socket.gethostname() or os.name != "posix":
        return False
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _unlink_if(file: Path, holder: dict) -> None:
    # two processes may both find the same dead lock: the file is removed only while it still
    # names that holder, and each then races for the O_EXCL create, which one of them wins
    if _holder(file) == holder:
        file.unlink(missing_ok=True)
