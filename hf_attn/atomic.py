"""Nothing lost: one writer per output folder, and folder replaces that a crash cannot leave half done.

**Locks.** ``FolderLock(folder)`` holds ``folder/.hf_attn.lock`` (or a lock file beside the folder, for a folder that
is itself replaced): a JSON record of the owner's pid, host and command, created in one ``os.link`` so it is never
seen half written. A second writer stops at once with ``FolderLockedError`` naming the folder and the running
process. A lock whose pid is dead on this host is stale: it is taken over, with a message. A lock from another host
cannot be checked from here; the message says so and how to remove it.

**Replacing a folder the user already has** (an export, ``best_model/``, a checkpoint saved again) goes in four
steps, so that at every instant one complete version exists under a known name::

    1. the new version is complete in  .NAME.tmp     (written beside NAME)
    2. the old one is renamed aside to .NAME.old
    3. the new one is renamed in:      NAME
    4. the old one is deleted

``recover(final)`` (run before each replace, and by ``FolderLock`` owners at start-up) finishes or undoes a replace
that was killed part way: with NAME missing, ``.NAME.old`` (the previous version, complete) is renamed back;
``.NAME.tmp`` beside a present NAME (killed before step 2: maybe incomplete) is deleted, as is a ``.NAME.old``
beside a present NAME (killed before step 4). Each action is reported through ``log``.

Tests make the process die after step k (``HF_ATTN_DIE_AFTER_SWAP_STEP=k``: ``os._exit`` at once, as ``kill -9``
would), then check that nothing is lost.

This module imports nothing from hf_attn, so tests can load it by path in a fresh, fast interpreter.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

try:
    from .errors import UsageError
except ImportError:  # loaded by path, outside the package (the kill tests: no torch import, a fast start)
    UsageError = ValueError

LOCK_NAME = ".hf_attn.lock"
DIE_AFTER_STEP = "HF_ATTN_DIE_AFTER_SWAP_STEP"


class FolderLockedError(UsageError):
    """The output folder is in use by another run (its lock names the process)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class FolderLock:
    """An exclusive lock on ``folder`` for this process: ``with FolderLock(out): ...`` or ``acquire()`` /
    ``release()``. ``beside=True`` keeps the lock file next to the folder (``.NAME.lock``), for folders that are
    replaced as a whole. Re-entrant within one process (a nested acquire of a lock this process holds is a no-op)."""

    _held: dict[str, int] = {}  # lock path -> nesting depth in this process

    def __init__(self, folder: str | Path, beside: bool = False, log=None):
        self.folder = Path(folder)
        self.path = (self.folder.parent / f".{self.folder.name}.lock") if beside else self.folder / LOCK_NAME
        self.log = log or (lambda msg: print(msg, file=sys.stderr))

    def _record(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300]}

    def read(self) -> dict | None:
        """The lock's record (None when there is no lock; ``{}`` for an unreadable one)."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def acquire(self, wait: float = 0.0) -> FolderLock:
        """Take the lock; a live owner makes it raise ``FolderLockedError`` at once, or after ``wait`` seconds of
        polling (for short writes of a shared folder, such as a cache)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                return self._acquire()
            except FolderLockedError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)

    def _acquire(self) -> FolderLock:
        key = str(self.path.resolve())
        if FolderLock._held.get(key):
            FolderLock._held[key] += 1
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.parent / f"{self.path.name}.{os.getpid()}.{socket.gethostname()}"
        tmp.write_text(json.dumps(self._record()))
        try:
            for _ in range(3):
                try:
                    os.link(tmp, self.path)  # atomic: fails if a lock exists, and the lock is never half written
                    FolderLock._held[key] = 1
                    return self
                except FileExistsError:
                    self._handle_existing()
            raise FolderLockedError(f"{self.folder}: could not take its lock {self.path} (another run keeps "
                                    f"taking it; wait for it to finish)")
        finally:
            tmp.unlink(missing_ok=True)

    def _handle_existing(self) -> None:
        """Remove a stale lock (with a message), or raise ``FolderLockedError`` naming its owner."""
        owner = self.read()
        if owner is None:  # released meanwhile
            return
        host, pid = owner.get("host"), owner.get("pid")
        if not isinstance(pid, int) or not host:
            age = time.time() - self.path.stat().st_mtime if self.path.exists() else 0
            if age < 10:  # being written by a run starting right now (cannot happen with os.link, but be safe)
                raise FolderLockedError(f"{self.folder} is in use: its lock {self.path} was just created "
                                        "(another run is starting there; use another folder)")
            self.log(f"{self.folder}: removing an unreadable lock file {self.path} (no run owns it)")
        elif host == socket.gethostname() and not _pid_alive(pid):
            self.log(f"{self.folder}: taking over a stale lock (process {pid} on {host}, started "
                     f"{owner.get('started', '?')}, is no longer running)")
        elif host == socket.gethostname():
            raise FolderLockedError(
                f"{self.folder} is in use by another run (process {pid}: {owner.get('command', '?')}, started "
                f"{owner.get('started', '?')}) (wait for it to finish, stop it, or pass another output folder)")
        else:
            raise FolderLockedError(
                f"{self.folder} is in use by process {pid} on host {host} (started {owner.get('started', '?')}) "
                f"(pass another output folder; if that run is gone, delete {self.path})")
        try:  # rename first: of two runs taking over the same stale lock, only one removes it
            aside = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}")
            os.replace(self.path, aside)
            aside.unlink(missing_ok=True)
        except FileNotFoundError:
            pass

    def release(self) -> None:
        key = str(self.path.resolve())
        depth = FolderLock._held.get(key, 0)
        if depth > 1:
            FolderLock._held[key] = depth - 1
            return
        FolderLock._held.pop(key, None)
        owner = self.read()
        if owner and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def temp_path(final: str | Path) -> Path:
    """Where the new version of ``final`` is written before it replaces ``final`` (step 1)."""
    final = Path(final)
    return final.parent / f".{final.name}.tmp"


def aside_path(final: str | Path) -> Path:
    """Where the old version of ``final`` waits while the new one is renamed in (step 2)."""
    final = Path(final)
    return final.parent / f".{final.name}.old"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _step_done(k: int) -> None:
    if os.environ.get(DIE_AFTER_STEP) == str(k):  # test hook: die here, as kill -9 would (no cleanup, no flush)
        os._exit(137)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def recover(final: str | Path, log=None) -> str | None:
    """Finish or undo a replace of ``final`` that was killed part way (see the module docstring); returns what was
    done (also passed to ``log``), or None when there was nothing to do."""
    final = Path(final)
    log = log or (lambda msg: print(msg, file=sys.stderr))
    tmp, aside = temp_path(final), aside_path(final)
    legacy = sorted(final.parent.glob(f".{final.name}.tmp-*")) if final.parent.is_dir() else []  # mkdtemp names
    done = []
    if not final.exists() and aside.exists():
        os.replace(aside, final)
        _fsync_dir(final.parent)
        done.append(f"restored {final} from {aside.name} (the previous version; a replace was interrupted)")
    for leftover in (tmp, aside, *legacy):
        if leftover.exists():
            _remove(leftover)
            done.append(f"removed {leftover.name} left beside {final.name} by an interrupted write")
    if done:
        message = f"{final}: " + "; ".join(done)
        log(message)
        return message
    return None


def replace_folder(new: str | Path, final: str | Path) -> Path:
    """Steps 2-4: put the complete folder ``new`` in place of ``final`` (which may not exist yet), never leaving a
    moment when neither a complete old nor a complete new version is on disk under a name ``recover`` knows."""
    new, final = Path(new), Path(final)
    _fsync_dir(new)
    _step_done(1)
    aside = aside_path(final)
    if final.exists():
        _remove(aside)
        os.replace(final, aside)
        _step_done(2)
    os.replace(new, final)
    _fsync_dir(final.parent)
    _step_done(3)
    _remove(aside)
    return final


def write_folder(final: str | Path, write_fn, log=None) -> Path:
    """Write a new version of the folder ``final`` by ``write_fn(tmp)`` into ``.NAME.tmp``, then ``replace_folder``.

    A leftover of an earlier interrupted replace is recovered first. If ``write_fn`` raises, the partial new version
    is removed and ``final`` is untouched.
    """
    final = Path(final)
    recover(final, log=log)
    tmp = temp_path(final)
    tmp.mkdir(parents=True)
    try:
        write_fn(tmp)
    except BaseException:
        _remove(tmp)
        raise
    return replace_folder(tmp, final)


def remove_folder(path: str | Path) -> None:
    """Delete ``path`` so that a crash half way leaves no half-deleted folder under its name (rename, then delete)."""
    path = Path(path)
    if not path.exists():
        return
    gone = path.parent / f".{path.name}.del"  # not .old: recover() would bring it back
    _remove(gone)
    os.replace(path, gone)
    _remove(gone)


__all__ = ["DIE_AFTER_STEP", "FolderLock", "FolderLockedError", "LOCK_NAME", "aside_path", "recover",
           "remove_folder", "replace_folder", "temp_path", "write_folder"]
