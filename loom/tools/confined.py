"""A directory the files capability cannot leave, enforced by the OS's view of the tree.

Every path is walked one component at a time from a file descriptor of the root:
``os.open(name, O_NOFOLLOW | ..., dir_fd=parent)``. The kernel resolves a single name in a
directory we already hold, refusing it when it is a symlink, so a symlink anywhere in the
path, a directory swapped for a symlink during the call, ``..`` and absolute paths cannot
lead out; nothing is decided by string checks on a resolved path. A regular file with more
than one hard link is refused outright: its other name may lie outside the root, and
nothing cheap proves it does not (docs/capabilities.md).

Messages name the rule broken and the path as the caller gave it, never anything the
kernel saw outside the root (a symlink's target, an outside file's contents).
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from wcmatch import fnmatch

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted in the root must not hang the call.
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
DEFAULT_EXCLUDE = (".git", ".env*")


class ConfinementError(ValueError):
    """A path the files capability refuses; the message names the rule broken."""


class ConfinedRoot:
    """The root directory, held open, and the rules every path under it must pass."""

    def __init__(self, root: str | os.PathLike[str], exclude: Sequence[str] = DEFAULT_EXCLUDE):
        self.fd = -1
        path = Path(root).expanduser()
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ValueError(f"files root {str(path)!r} does not exist") from None
        except NotADirectoryError:
            raise ValueError(f"files root {str(path)!r} is not a directory") from None
        except PermissionError:
            raise ValueError(f"files root {str(path)!r} cannot be opened (permission)") from None
        self.path = path.resolve()
        for pattern in exclude:
            if not isinstance(pattern, str) or not pattern:
                raise ValueError(f"exclude patterns must be non-empty strings, not {pattern!r}")
        self.exclude = tuple(exclude)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        self.close()

    # -- rules on the text of a path -----------------------------------------------------
    def parts(self, path: str, *, allow_root: bool = False) -> list[str]:
        """The components of a relative path, checked; ``.`` and empty ones dropped."""
        if not isinstance(path, str) or "\x00" in path:
            raise ConfinementError("invalid path: it must be text without NUL characters")
        if path.startswith(("/", "~")):
            raise ConfinementError(
                "absolute paths are refused: give a path relative to the files root"
            )
        parts = [part for part in path.split("/") if part not in ("", ".")]
        if ".." in parts:
            raise ConfinementError(f"{path!r}: '..' is refused: paths stay inside the files root")
        if not parts and not allow_root:
            raise ConfinementError("empty path: name a file inside the files root")
        for part in parts:
            if self.excluded(part):
                raise ConfinementError(f"{path!r}: excluded by the files capability ({part!r})")
        return parts

    def excluded(self, name: str) -> bool:
        return fnmatch.fnmatch(name, self.exclude, flags=fnmatch.DOTMATCH)

    # -- walking with the kernel's view --------------------------------------------------
    @contextmanager
    def directory(self, parts: Sequence[str], shown: str) -> Iterator[int]:
        """A file descriptor of the directory ``parts`` names, opened component by
        component with ``O_NOFOLLOW`` from the root's descriptor."""
        fd = os.dup(self.fd)
        try:
            for part in parts:
                child = _open(part, _DIR, fd, shown)
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    @contextmanager
    def open_file(self, path: str) -> Iterator[int]:
        """A descriptor of the regular file at ``path``, read-only."""
        parts = self.parts(path)
        with self.directory(parts[:-1], path) as parent:
            fd = _open(parts[-1], _FILE, parent, path)
            try:
                check_regular(os.fstat(fd), path)
                yield fd
            finally:
                os.close(fd)

    def write_atomic(self, path: str, data: bytes, *, make_dirs: bool = True) -> bool:
        """Write ``data`` to ``path`` through a temporary file in the same directory and
        ``os.replace``: readers see the old file or the new one, never half of it. Returns
        True when the file was created."""
        parts = self.parts(path)
        if make_dirs:
            self._make_dirs(parts[:-1], path)
        name = parts[-1]
        with self.directory(parts[:-1], path) as parent:
            mode = 0o644
            created = True
            try:
                existing = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                pass
            else:
                check_regular(existing, path)
                mode, created = stat.S_IMODE(existing.st_mode), False
            temp = f".{name[:40]}.{secrets.token_hex(6)}.tmp"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(temp, flags, mode, dir_fd=parent)
            try:
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(temp, name, src_dir_fd=parent, dst_dir_fd=parent)
            except BaseException:
                with suppress(OSError):
                    os.unlink(temp, dir_fd=parent)
                raise
            return created

    def _make_dirs(self, parts: Sequence[str], shown: str) -> None:
        fd = os.dup(self.fd)
        try:
            for part in parts:
                with suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                child = _open(part, _DIR, fd, shown)
                os.close(fd)
                fd = child
        finally:
            os.close(fd)


def check_regular(info: os.stat_result, shown: str) -> None:
    """Only plain files with one name are read or replaced."""
    if stat.S_ISDIR(info.st_mode):
        raise ConfinementError(f"{shown!r} is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise ConfinementError(f"{shown!r} is not a regular file (device, FIFO or socket)")
    if info.st_nlink > 1:
        raise ConfinementError(
            f"{shown!r} has {info.st_nlink} hard links: refused, since another of its names "
            "may lie outside the files root"
        )


def _open(name: str, flags: int, dir_fd: int, shown: str) -> int:
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        raise ConfinementError(_explain(exc.errno, shown)) from None


def _explain(code: int | None, shown: str) -> str:
    if code == errno.ELOOP:
        return f"{shown!r}: a symlink in the path: refused, symlinks are not followed"
    if code == errno.ENOENT:
        return f"{shown!r}: no such file or directory"
    if code == errno.ENOTDIR:
        return f"{shown!r}: a component of the path is not a directory"
    if code in (errno.EACCES, errno.EPERM):
        return f"{shown!r}: permission denied"
    return f"{shown!r}: cannot be opened ({errno.errorcode.get(code or 0, 'error')})"


__all__ = ["DEFAULT_EXCLUDE", "ConfinedRoot", "ConfinementError", "check_regular"]
