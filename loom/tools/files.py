"""The files capability's tools: read, list and search inside a root; write and edit unless
read-only. Every path goes through ``ConfinedRoot`` (loom/tools/confined.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import regex
from wcmatch import glob

from loom.tools.confined import DEFAULT_EXCLUDE, ConfinedRoot, ConfinementError, check_regular
from loom.tools.tool import Tool

_GLOB = glob.GLOBSTAR | glob.DOTGLOB | glob.BRACE
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_REGEX_TIMEOUT = 2.0
_SKIP_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class FilesOptions:
    """Limits of the files tools."""

    read_only: bool = True
    max_read_bytes: int = 256 * 1024
    max_results: int = 500
    max_walk: int = 50_000
    """Directory entries a listing or search looks at, at most."""
    max_search_file_bytes: int = 2 * 1024 * 1024


class Files:
    """The tools of one files root."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        exclude: Sequence[str] = DEFAULT_EXCLUDE,
        options: FilesOptions | None = None,
    ) -> None:
        self.root = ConfinedRoot(root, exclude)
        self.options = options or FilesOptions()
        if self.options.max_read_bytes < 1:
            raise ValueError("max_read_bytes must be at least 1")

    # -- reading ---------------------------------------------------------------------------
    def read(self, path: str, offset: int = 0, limit: int | None = None) -> str:
        if offset < 0 or (limit is not None and limit < 1):
            raise ConfinementError("offset must be >= 0 and limit >= 1")
        budget = self.options.max_read_bytes
        out: list[bytes] = []
        with self.root.open_file(path) as fd, open(fd, "rb", closefd=False) as handle:
            number = 0  # the line being read; lines are read with a bound, never whole
            while limit is None or number < offset + limit:
                if number < offset:
                    skipped = handle.readline(_SKIP_CHUNK)
                    if not skipped:
                        break
                    number += skipped.endswith(b"\n")
                    continue
                line = handle.readline(budget + 1)
                if not line:
                    break
                if b"\x00" in line:
                    raise ConfinementError(f"{path!r} is a binary file: not shown")
                if len(line) > budget:
                    out.append(line[:budget])
                    more = f"\n[truncated at max_read_bytes; read on with offset={number + 1}]"
                    out.append(more.encode())
                    break
                budget -= len(line)
                out.append(line)
                number += 1
        return b"".join(out).decode("utf-8", errors="replace")

    def walk(self) -> Iterator[tuple[str, os.DirEntry[str], int]]:
        """Every entry under the root (not following symlinks, skipping excluded names),
        with the descriptor of its directory; at most ``max_walk`` entries."""
        seen = 0
        stack: list[tuple[str, int]] = [("", os.dup(self.root.fd))]
        try:
            while stack:
                prefix, fd = stack.pop()
                try:
                    with os.scandir(fd) as entries:
                        listing = sorted(entries, key=lambda e: e.name)
                    for entry in listing:
                        seen += 1
                        if seen > self.options.max_walk:
                            return
                        if self.root.excluded(entry.name):
                            continue
                        rel = f"{prefix}{entry.name}"
                        if entry.is_dir(follow_symlinks=False):
                            try:
                                child = os.open(entry.name, _DIR, dir_fd=fd)
                            except OSError:
                                continue  # swapped for a symlink, or unreadable: skipped
                            stack.append((rel + "/", child))
                        yield rel, entry, fd
                finally:
                    os.close(fd)
        finally:
            for _, fd in stack:
                os.close(fd)

    def listing(self, pattern: str = "**") -> str:
        matched: list[str] = []
        for rel, entry, _ in self.walk():
            if glob.globmatch(rel, pattern, flags=_GLOB):
                kind = "/" if entry.is_dir(follow_symlinks=False) else ""
                kind = "@" if entry.is_symlink() else kind
                matched.append(rel + kind)
                if len(matched) >= self.options.max_results:
                    matched.append(f"[stopped at {self.options.max_results} results]")
                    break
        return "\n".join(matched) if matched else f"no files match {pattern!r}"

    def search(self, pattern: str, path_glob: str = "**", ignore_case: bool = False) -> str:
        try:
            compiled = regex.compile(pattern, regex.IGNORECASE if ignore_case else 0)
        except regex.error as exc:
            raise ConfinementError(f"invalid regular expression: {exc}") from None
        hits: list[str] = []
        for rel, entry, parent in self.walk():
            if not entry.is_file(follow_symlinks=False):
                continue
            if not glob.globmatch(rel, path_glob, flags=_GLOB):
                continue
            for number, line in self._lines(entry.name, parent, rel):
                try:
                    found = compiled.search(line, timeout=_REGEX_TIMEOUT)
                except TimeoutError:
                    raise ConfinementError(
                        f"the regular expression took over {_REGEX_TIMEOUT:g}s on one line: "
                        "simplify it"
                    ) from None
                if found:
                    hits.append(f"{rel}:{number}: {line[:300]}")
                    if len(hits) >= self.options.max_results:
                        hits.append(f"[stopped at {self.options.max_results} matches]")
                        return "\n".join(hits)
        return "\n".join(hits) if hits else f"no matches for {pattern!r}"

    def _lines(self, name: str, parent: int, rel: str) -> Iterator[tuple[int, str]]:
        try:
            fd = os.open(name, _FILE, dir_fd=parent)
        except OSError:
            return  # swapped for a symlink, or unreadable: skipped
        try:
            info = os.fstat(fd)
            try:
                check_regular(info, rel)
            except ConfinementError:
                return  # hard-linked or special files are not searched
            if info.st_size > self.options.max_search_file_bytes:
                return
            with open(fd, "rb", closefd=False) as handle:
                data = handle.read(self.options.max_search_file_bytes)
        finally:
            os.close(fd)
        if b"\x00" in data[:8192]:
            return
        yield from enumerate(data.decode("utf-8", errors="replace").splitlines(), 1)

    # -- writing ---------------------------------------------------------------------------
    def write(self, path: str, content: str) -> str:
        data = content.encode()
        created = self.root.write_atomic(path, data)
        return f"{'created' if created else 'replaced'} {path} ({len(data)} bytes)"

    def edit(self, path: str, old: str, new: str, replace_all: bool = False) -> str:
        if not old:
            raise ConfinementError("old must not be empty")
        with self.root.open_file(path) as fd, open(fd, "rb", closefd=False) as handle:
            if os.fstat(fd).st_size > self.options.max_search_file_bytes:
                raise ConfinementError(f"{path!r} is too large to edit")
            text = handle.read().decode("utf-8")
        count = text.count(old)
        if count == 0:
            raise ConfinementError(f"{path!r}: the text to replace was not found")
        if count > 1 and not replace_all:
            raise ConfinementError(
                f"{path!r}: the text to replace occurs {count} times; give more context or "
                "set replace_all"
            )
        self.root.write_atomic(path, text.replace(old, new).encode(), make_dirs=False)
        return f"edited {path}: {count if replace_all else 1} replacement(s)"

    # -- tools -----------------------------------------------------------------------------
    def tools(self) -> list[Tool[..., Any]]:
        files = self

        def read_file(path: str, offset: int = 0, limit: int | None = None) -> str:
            """Read a text file under the files root.

            Args:
                path: Path relative to the files root.
                offset: Lines to skip from the start.
                limit: Lines to return at most (default: up to the size limit).
            """
            return files.read(path, offset, limit)

        def list_files(pattern: str = "**") -> str:
            """List files under the files root matching a glob (``**`` crosses
            directories); directories end with ``/``, symlinks (never followed) with ``@``.

            Args:
                pattern: A glob relative to the root, like ``**/*.log`` or ``src/*``.
            """
            return files.listing(pattern)

        def search_files(pattern: str, glob: str = "**", ignore_case: bool = False) -> str:
            """Search the contents of files under the files root with a regular expression;
            answers ``path:line: text`` per match.

            Args:
                pattern: A regular expression.
                glob: Only files whose path matches this glob.
                ignore_case: Match without regard to case.
            """
            return files.search(pattern, glob, ignore_case)

        reads: list[Tool[..., Any]] = [
            Tool(read_file, read_only=True, idempotent=True),
            Tool(list_files, read_only=True, idempotent=True),
            Tool(search_files, read_only=True, idempotent=True),
        ]
        if self.options.read_only:
            return reads

        def write_file(path: str, content: str) -> str:
            """Create or replace a file under the files root (atomically; parent
            directories are created).

            Args:
                path: Path relative to the files root.
                content: The file's whole new content.
            """
            return files.write(path, content)

        def edit_file(path: str, old: str, new: str, replace_all: bool = False) -> str:
            """Replace text in a file under the files root (atomically).

            Args:
                path: Path relative to the files root.
                old: The exact text to replace; it must occur once unless replace_all.
                new: The text to put in its place.
                replace_all: Replace every occurrence.
            """
            return files.edit(path, old, new, replace_all)

        return [
            *reads,
            Tool(write_file, destructive=True, idempotent=True),
            Tool(edit_file, destructive=True),
        ]


__all__ = ["Files", "FilesOptions"]
