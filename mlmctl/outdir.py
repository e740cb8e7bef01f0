"""An output directory's safety rules: one writer at a time, and only mlmctl's own files deleted.

- `DirLock`: an exclusive `flock` on `OUT/.mlmctl.lock`, held for the whole run and released by the
  OS however the process ends (SIGKILL included); a second run gets one line naming the holder.
  A run that ends normally removes the file; one that was killed leaves it, unlocked and harmless.
- `survey(out, stage, writes)`: what in `out` mlmctl can prove it wrote ("ours") and what else is
  there ("foreign"). A path is ours when the directory carries proof, a parseable mlmctl manifest
  of this stage or a run marker `.work/run.json`, and the path is named by that manifest, lies
  under `.work/`, or matches the stage's declared `writes` globs; temporaries of our atomic writes
  (`.NAME.tmp-PID-HEX`, `.step-N.tmp-PID`) are ours anywhere. Symbolic links are never ours.
- `delete_ours(out, survey)`: removes exactly the ours set, then the folders it emptied.
- `remove_temporaries(out)`: leftovers of killed atomic writes; call it only under the lock.
- `--rebuild` builds beside the output in `.NAME.rebuild/` and `exchange()`s the two directories
  when the replacement is finished.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from mlmctl import safe_json
from mlmctl.errors import MlmctlError
from mlmctl.layout import LOCK_FILE, MANIFEST, RUN_FILE, WORK

# `.NAME.tmp-PID-HEX` (shards.atomic_write) and `.step-NNNNNN.tmp-PID` (checkpoint.save_checkpoint)
TEMPORARY = re.compile(r"^\..+\.tmp-\d+(-[0-9a-f]+)?$")


# ----------------------------------------------------------------------------------------------
# Lock


@contextlib.contextmanager
def serialised(directory: Path):
    """An exclusive flock on the directory itself (its lock file is held shared by `--task` runs):
    `--task` runs that start together inspect and mark the directory one at a time. Blocking,
    as each holds it only for that moment."""
    import fcntl

    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # drops the flock


class DirLock:
    """`with DirLock(out, stage):` holds `out/.mlmctl.lock` exclusively (creating `out`).

    `shared=True` is for `--task I/N` runs: they fan out over one directory by design and each
    writes only its own units, so they share the lock with each other and exclude the rest.
    """

    def __init__(self, directory: Path, stage: str, *, shared: bool = False):
        self.directory = Path(directory)
        self.stage = stage
        self.shared = shared
        self.fd: int | None = None
        self.created = False

    def acquire(self) -> DirLock:
        import fcntl

        self._make_directory()
        path = self.directory / LOCK_FILE
        while True:
            fd = self._open(path)
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except OSError as e:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
                    raise MlmctlError(
                        f"{self.stage}: another mlmctl run (PID {holder}) is writing to {self.directory}; "
                        f"wait for it to finish or stop it, then rerun"
                    ) from None
                raise
            # The holder we waited on may have unlinked the file as it finished: lock the live one.
            try:
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        # The PID is only for the message above; the lock itself is the flock.
        os.pwrite(fd, f"{os.getpid()}\n".encode().ljust(12), 0)
        self.fd = fd
        return self

    def _make_directory(self) -> None:
        """Create the output directory; a path that cannot be one is one line naming it."""
        if self.directory.is_dir():
            return
        if self.directory.exists():
            raise MlmctlError(f"{self.stage}: output {self.directory} exists and is not a directory; "
                              f"choose another --output")
        try:
            self.directory.mkdir(parents=True)
        except FileExistsError:  # a race with another run creating it: fine, the lock decides
            return
        except OSError as e:
            raise MlmctlError(f"{self.stage}: cannot create output directory {self.directory} "
                              f"({e.strerror or e}: {e.filename or self.directory}); choose another --output") from None
        self.created = True

    def _open(self, path: Path) -> int:
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise MlmctlError(f"{self.stage}: cannot write in output directory {self.directory} "
                              f"({e.strerror or e}); choose another --output") from None

    def alone(self) -> bool:
        """Whether no other run holds this (shared) lock. Asked inside `serialised`, so no other
        --task run probes at the same moment: converting to exclusive succeeds only when no one
        else holds it; then back to shared."""
        import fcntl

        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except BlockingIOError:
            alone = False  # (a failed conversion drops our shared lock: Linux flock)
        try:
            fcntl.flock(self.fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MlmctlError(f"{self.stage}: another mlmctl run took {self.directory} meanwhile; "
                              f"rerun when it has finished") from None
        return alone

    def release(self) -> None:
        if self.fd is None:
            return
        if not self.shared:
            # Unlink before unlocking, so a finished directory holds only its output; a run that
            # opened the old file meanwhile sees it gone (acquire's inode check) and retries.
            with contextlib.suppress(OSError):
                (self.directory / LOCK_FILE).unlink()
        os.close(self.fd)  # closing the descriptor drops the flock
        self.fd = None

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.release()
        # A run refused (or failed) before it wrote anything leaves no empty folder behind.
        if exc_type is not None and self.created:
            with contextlib.suppress(OSError):
                self.directory.rmdir()


# ----------------------------------------------------------------------------------------------
# What is ours


@dataclass
class Survey:
    proof: str | None  # "manifest", "marker" or None
    ours: list[Path] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)

    def refuse(self, stage: str, out: Path) -> None:
        """Raise, naming what is not ours, if anything is."""
        if not self.foreign:
            return
        shown = ", ".join(self.foreign[:3]) + (f" and {len(self.foreign) - 3} more" if len(self.foreign) > 3 else "")
        why = "holds files mlmctl did not write" if self.proof else (
            "is not empty and is not an mlmctl stage directory (no mlmctl manifest.json or .work/run.json)")
        raise MlmctlError(
            f"{stage}: output {out} {why} ({shown}); nothing was deleted, even with --force/--rebuild: "
            f"choose another --output or move those files away yourself"
        )


def read_marker(directory: Path) -> dict | None:
    """The run marker `.work/run.json` if it is one of ours."""
    try:
        marker = safe_json.loads((Path(directory) / WORK / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return marker if isinstance(marker, dict) and "config_hash" in marker else None


def survey(out: Path, stage: str, writes: tuple[str, ...] = ()) -> Survey:
    """Sort every file under `out` into ours and foreign (see the module docstring)."""
    from mlmctl.manifest import load_manifest_names

    out = Path(out)
    listed = load_manifest_names(out, stage)
    marker = read_marker(out)
    marker_ok = marker is not None and marker.get("stage", stage) == stage
    proof = "manifest" if listed is not None else ("marker" if marker_ok else None)
    named = set(listed or ())
    if listed is not None:
        named.add(MANIFEST)
    result = Survey(proof)
    for root, dirs, files in os.walk(out):
        rootp = Path(root)
        for name in sorted(dirs):
            if (rootp / name).is_symlink():
                files.append(name)  # a link to a folder is an entry to judge, never to walk
        for name in sorted(files):
            path = rootp / name
            rel = path.relative_to(out).as_posix()
            if rel == LOCK_FILE:
                continue
            mine = not path.is_symlink() and (
                TEMPORARY.match(name) is not None
                or (proof is not None and (
                    rel in named
                    or rel.startswith(WORK + "/")
                    or any(fnmatch.fnmatchcase(rel, pat) for pat in writes)
                ))
            )
            (result.ours.append(path) if mine else result.foreign.append(rel))
        # Temporary checkpoint folders (`.step-N.tmp-PID/`) are ours whole, whatever they hold.
        for name in list(dirs):
            if TEMPORARY.match(name) and not (rootp / name).is_symlink():
                result.ours.append(rootp / name)
                dirs.remove(name)
            elif (rootp / name).is_symlink():
                dirs.remove(name)
    return result


def delete_ours(out: Path, found: Survey) -> None:
    """Delete the ours set of `found` (files first, then folders it leaves empty); nothing else."""
    out = Path(out)
    # The manifest goes first: a kill while clearing must not leave a directory that looks finished.
    for path in sorted(found.ours, key=lambda p: p.name != MANIFEST):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    _remove_empty_dirs(out)


def _remove_empty_dirs(out: Path) -> None:
    for root, dirs, _files in os.walk(out, topdown=False):
        for name in dirs:
            path = Path(root) / name
            if not path.is_symlink():
                with contextlib.suppress(OSError):
                    path.rmdir()  # fails, harmlessly, when something is still in it


def remove_temporaries(out: Path) -> int:
    """Remove leftovers of killed atomic writes anywhere under `out`; returns how many."""
    count = 0
    for root, dirs, files in os.walk(out):
        for name in [*files, *dirs]:
            path = Path(root) / name
            if TEMPORARY.match(name) and not path.is_symlink():
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                    dirs.remove(name)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                count += 1
    return count


def finish_cleanup(out: Path) -> None:
    """Remove `.work/` of a finished directory, the run marker last (a kill mid-way stays provable)."""
    work = Path(out) / WORK
    if not work.is_dir() or work.is_symlink():
        return
    for child in work.iterdir():
        if child.name != RUN_FILE:
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() and not child.is_symlink() else child.unlink()
    with contextlib.suppress(FileNotFoundError):
        (work / RUN_FILE).unlink()
    with contextlib.suppress(OSError):
        work.rmdir()


def is_empty(out: Path) -> bool:
    """True for a missing directory or one that holds only our lock file."""
    return not out.exists() or all(p.name == LOCK_FILE for p in out.iterdir())


# ----------------------------------------------------------------------------------------------
# --rebuild: build beside, then exchange


def rebuild_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.rebuild"


def old_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.old"


def exchange(a: Path, b: Path) -> None:
    """Swap two directories: atomically (Linux renameat2 RENAME_EXCHANGE) where possible.

    Elsewhere, two renames through `old_dir(a)`; `recover_rebuild` finishes the job after a kill.
    """
    if _renameat2_exchange(a, b):
        return
    tmp = old_dir(a)
    os.rename(a, tmp)
    os.rename(b, a)
    os.rename(tmp, b)


def _renameat2_exchange(a: Path, b: Path) -> bool:
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False  # a file system without RENAME_EXCHANGE: fall back to renames
    raise OSError(code, os.strerror(code), str(a))


def recover_rebuild(out: Path) -> None:
    """Undo the one half-state the fallback `exchange` can leave: `out` renamed away, not back."""
    tmp = old_dir(out)
    if not out.exists() and tmp.is_dir():
        os.rename(tmp, out)
