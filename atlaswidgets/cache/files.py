"""The store's files: written so that a crash never leaves half of one, and directories replaced
so that a crash never loses both the old store and the new one (see ``store``'s docstring).

Temporary names start with "." and hold ``.tmp-``: ``.<final name>.tmp-<pid>-<random>`` for a
file, ``.<store>.new.tmp-<host>-<pid>-<random>`` and ``.<store>.old.tmp-...`` for the directories
of a re-save. Readers ignore them; ``recover`` tidies those of a writer that has died.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Callable

from .lock import LOCK, clear_stale

__all__ = ["MANIFEST", "atomic_write", "fsync_dir", "sha256_bytes", "shard_name", "is_shard",
           "is_ours_tmp", "user_path", "check_parents", "siblings", "recover", "replace_dir",
           "wait_for_swap"]

MANIFEST = "manifest.json"
_TMP = ".tmp-"  # marks our temporary files and directories


# ----------------------------------------------------------------------------- atomic files


def atomic_write(path: Path, data: bytes) -> None:
    """Write bytes to ``path`` so that a crash leaves the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}{_TMP}{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    # makes the rename itself durable; not possible on every platform (Windows), where it is skipped
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def is_shard(name: str) -> bool:
    return name.startswith("shard-") and name.endswith(".safetensors")


def is_ours_tmp(name: str) -> bool:
    return name.startswith(".") and _TMP in name


# ----------------------------------------------------------------------------- paths


def user_path(path: Any, action: str) -> Path:
    """``path`` as a Path with ``~`` expanded (a literal ``./~`` directory is never what is meant)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{action} needs a path (str or pathlib.Path), got {type(path).__name__}.")
    return Path(path).expanduser()


def check_parents(path: Path, action: str) -> None:
    """Refuse a path below a regular file, which could never become a directory."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{str(parent)!r} is a file, so {str(path)!r} cannot be a directory "
                                 f"below it; {action} needs a directory. Pass another path.")
            return


# Siblings of a store made while saving over it (see the module docstring). Their names carry the
# writer's host and pid, so that only leftovers of a process that is gone are tidied: a live one
# may be in the middle of its swap.


def owner() -> str:
    host = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
    return f"{host}-{os.getpid()}"


def sibling(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}{_TMP}{owner()}-{secrets.token_hex(4)}")


def siblings(path: Path, kind: str) -> list[Path]:
    prefix = f".{path.name}.{kind}{_TMP}"
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    return sorted(path.parent / n for n in names if n.startswith(prefix))


def writer_gone(path: Path) -> bool:
    """Whether the process that made the sibling ``path`` has ended. Unknown (another host, not
    POSIX, where a signal 0 is no probe) counts as running: then its leftovers are left alone."""
    parts = path.name.rsplit(_TMP, 1)[1].split("-")
    if len(parts) < 2 or parts[0] != owner().split("-")[0] or os.name != "posix":
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    if pid == os.getpid():
        return False  # this process: another thread of it may be saving
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, but not ours to signal
        return False
    return False


def recover(path: Path) -> None:
    """Tidy what a save killed midway left beside ``path``: bring the old store back if the process
    died between its two renames, else finish its clean-up. Best effort: a place we cannot write
    to is left as it is (read_manifest's message then names the aside copy)."""
    path = Path(os.path.realpath(path))  # where replace_dir() swapped, also for a symlinked store
    for aside in siblings(path, "old"):
        if not writer_gone(aside):
            continue
        try:
            if not os.path.lexists(path):
                os.rename(aside, path)  # died between the renames: the old store is the complete one
                fsync_dir(path.parent)
                clear_stale(path)  # the dead writer's lock came back with it
            elif (path / MANIFEST).is_file():  # died after them: the new store stands
                move_extras(aside, path)
                shutil.rmtree(aside)
        except OSError:
            pass
    for new in siblings(path, "new"):
        if writer_gone(new):
            shutil.rmtree(new, ignore_errors=True)


def wait_for_swap(path: Path, limit_s: float = 5.0) -> None:
    """Wait while another live process is between the two renames of a re-save of ``path`` (the
    name is absent for that moment), so that a reader or a writer never takes the gap for "no
    store". Returns at once when the name exists or no other process is swapping."""
    real = Path(os.path.realpath(path))
    deadline = time.monotonic() + limit_s
    while not os.path.lexists(real) and time.monotonic() < deadline:
        if not swap_in_progress(real):
            return
        time.sleep(0.005)


def swap_in_progress(path: Path) -> bool:
    """Whether another live process is re-saving ``path`` (its old store is set aside)."""
    real = Path(os.path.realpath(path))
    # this process's own aside is a swap that failed here (it raised), not one in progress
    return any(not writer_gone(a) and not _made_here(a) for a in siblings(real, "old"))


def _made_here(sibling: Path) -> bool:
    parts = sibling.name.rsplit(_TMP, 1)[1].split("-")
    return len(parts) > 1 and parts[0] == owner().split("-")[0] and parts[1] == str(os.getpid())


def move_extras(old: Path, new: Path) -> None:
    """Move what else lives in a store directory (icons rendered beside it, see render/icons.py)
    from the old store into the new one that replaces it."""
    try:
        names = os.listdir(old)
    except OSError:
        return
    for name in names:
        if name in (MANIFEST, LOCK) or is_shard(name) or is_ours_tmp(name) or os.path.lexists(new / name):
            continue
        try:
            os.rename(old / name, new / name)
        except OSError as e:
            warnings.warn(f"Could not move {str(old / name)!r} into the re-saved store {str(new)!r} "
                          f"({e.strerror}); move it by hand if you want to keep it.", stacklevel=3)


# ----------------------------------------------------------------------------- replacing a store


def replace_dir(path: Path, write: Callable[[Path], None]) -> None:
    """Replace the store at ``path`` with the one ``write`` makes, keeping the old one loadable
    until the new one is complete: written beside it, then swapped in by renames."""
    real = Path(os.path.realpath(path))  # a symlinked store is replaced where it really lives
    new = sibling(real, "new")
    try:
        write(new)
        _copy_mode(real, new)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)  # the old store was not touched
        raise
    _swap(new, real)


def _swap(new: Path, path: Path) -> None:
    aside = sibling(path, "old")
    try:
        os.rename(path, aside)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    # from here until the next rename, ``path`` is absent: a process killed now leaves the old
    # store in ``aside``, and recover() renames it back on the next use of ``path``
    try:
        os.rename(new, path)
    except BaseException:
        try:
            os.rename(aside, path)  # should this fail too, recover() does it once this process is gone
        finally:
            shutil.rmtree(new, ignore_errors=True)
        raise
    fsync_dir(path.parent)
    move_extras(aside, path)
    shutil.rmtree(aside, ignore_errors=True)


def _copy_mode(old: Path, new: Path) -> None:
    # the new directory replaces the old one: keep who may read it (umask decided the new one)
    try:
        os.chmod(new, os.stat(old).st_mode & 0o7777)
    except OSError:
        pass
