"""Capability.files: confined to its root by the kernel's view of the tree."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from loom import Agent, Capability
from loom.providers.test import FunctionModel
from loom.tools.confined import ConfinementError
from loom.tools.files import Files, FilesOptions
from tests.capability_helpers import Script

SECRET = "outside-secret-7f3a"


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """A root with files, and a directory outside it holding a secret."""
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    (root / "logs").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (root / "logs" / "app.log").write_text("line one\nERROR disk full\nline three\n")
    (root / "README.md").write_text("hello\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    (root / ".env.local").write_text("TOKEN=abc\n")
    return root, outside


def files(root: Path, **options: Any) -> Files:
    return Files(root, options=FilesOptions(**options))


def refused(fn: Any, *args: Any) -> str:
    with pytest.raises(ConfinementError) as caught:
        fn(*args)
    message = str(caught.value)
    assert SECRET not in message
    return message


def test_reads_inside_the_root_with_offset_and_limit(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    f = files(root)
    assert f.read("logs/app.log") == "line one\nERROR disk full\nline three\n"
    assert f.read("logs/app.log", offset=1, limit=1) == "ERROR disk full\n"
    assert f.read("./logs//app.log", offset=2) == "line three\n"


def test_max_read_bytes_cuts_and_says_where_to_read_on(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    (root / "big.txt").write_text("x" * 100 + "\n" + "y" * 10 + "\n")
    text = files(root, max_read_bytes=50).read("big.txt")
    assert text.startswith("x" * 50)
    assert "offset=1" in text
    assert "yyy" not in text


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("../outside/secret.txt", "'..' is refused"),
        ("logs/../../outside/secret.txt", "'..' is refused"),
        ("/etc/passwd", "absolute paths are refused"),
        ("~/secret.txt", "absolute paths are refused"),
        ("", "empty path"),
        (".git/config", "excluded"),
        (".env.local", "excluded"),
        ("logs\x00/app.log", "NUL"),
    ],
)
def test_bad_paths_name_the_rule(tree: tuple[Path, Path], path: str, rule: str) -> None:
    root, _ = tree
    assert rule in refused(files(root).read, path)


def test_a_symlink_to_a_file_outside_is_refused(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    (root / "passwd").symlink_to("/etc/passwd")
    (root / "secret").symlink_to(outside / "secret.txt")
    assert "symlink" in refused(files(root).read, "passwd")
    message = refused(files(root).read, "secret")
    assert "symlink" in message
    assert str(outside) not in message


def test_a_symlinked_directory_in_the_middle_of_a_path_is_refused(
    tree: tuple[Path, Path],
) -> None:
    root, outside = tree
    (root / "logs" / "elsewhere").symlink_to(outside)
    message = refused(files(root).read, "logs/elsewhere/secret.txt")
    assert "symlink" in message or "not a directory" in message
    # A symlink inside the root pointing inside the root is refused too: no symlink is
    # followed, wherever it points.
    (root / "alias").symlink_to(root / "logs")
    refused(files(root).read, "alias/app.log")


def test_a_hard_link_to_a_file_outside_is_refused(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    try:
        os.link(outside / "secret.txt", root / "linked.txt")
    except OSError as exc:  # another filesystem: no hard link possible, nothing to test
        pytest.skip(f"no hard links here: {exc}")
    assert "hard links" in refused(files(root).read, "linked.txt")
    assert "linked.txt" not in files(root).search("outside-secret")
    assert "no matches" in files(root).search(SECRET)


def test_writes_are_atomic_and_confined(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    f = files(root, read_only=False)
    assert f.write("notes/today.md", "first\n").startswith("created")
    assert (root / "notes" / "today.md").read_text() == "first\n"
    assert f.write("notes/today.md", "second\n").startswith("replaced")
    assert f.edit("notes/today.md", "second", "third") == "edited notes/today.md: 1 replacement(s)"
    assert (root / "notes" / "today.md").read_text() == "third\n"
    assert [p.name for p in (root / "notes").iterdir()] == ["today.md"]  # no temp left
    # A symlink where the file would go is never written through.
    (root / "escape").symlink_to(outside / "secret.txt")
    refused(f.write, "escape", "overwritten")
    (root / "dir").symlink_to(outside)
    refused(f.write, "dir/new.txt", "x")
    refused(f.write, "../outside/secret.txt", "x")
    assert (outside / "secret.txt").read_text() == SECRET
    assert not (outside / "new.txt").exists()


def test_edit_names_what_is_wrong(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    f = files(root, read_only=False)
    assert "not found" in refused(f.edit, "README.md", "absent", "x")
    (root / "twice.txt").write_text("a a")
    assert "2 times" in refused(f.edit, "twice.txt", "a", "b")
    assert f.edit("twice.txt", "a", "b", True).endswith("2 replacement(s)")


def test_list_and_search_skip_symlinks_and_excluded_names(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    (root / "out").symlink_to(outside)
    f = files(root)
    listing = f.listing("**").splitlines()
    assert "logs/app.log" in listing
    assert "logs/" in listing
    assert "out@" in listing
    assert not any(".git" in line or ".env" in line for line in listing)
    assert f.listing("**/*.log") == "logs/app.log"
    assert f.search("ERROR") == "logs/app.log:2: ERROR disk full"
    assert f.search("error", "**/*.md", True).startswith("no matches")
    assert "no matches" in f.search(SECRET)  # never through the symlinked directory
    assert "invalid regular expression" in refused(f.search, "(")


def test_results_are_bounded(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    for number in range(20):
        (root / f"f{number}.txt").write_text("match\n")
    f = files(root, max_results=5)
    assert f.listing("*.txt").splitlines()[-1] == "[stopped at 5 results]"
    assert f.search("match").splitlines()[-1] == "[stopped at 5 matches]"


def test_a_directory_swapped_for_a_symlink_thousands_of_times_never_escapes(
    tree: tuple[Path, Path],
) -> None:
    """A thread swaps ``root/swap`` between a real directory and a symlink to the outside
    while reads of ``swap/secret.txt`` run: each read sees the inside file or is refused."""
    root, outside = tree
    real = root / "real"
    real.mkdir()
    (real / "secret.txt").write_text("inside\n")
    link = root / "link"
    link.symlink_to(outside)
    swap = root / "swap"
    f = files(root)
    stop = threading.Event()
    swaps = 0

    def swapper() -> None:
        nonlocal swaps
        while not stop.is_set():
            os.rename(real, swap)  # swap is the real directory
            os.rename(swap, real)
            os.rename(link, swap)  # swap is a symlink to the outside
            os.rename(swap, link)
            swaps += 1

    thread = threading.Thread(target=swapper)
    thread.start()
    seen: dict[str, int] = {}
    messages: set[str] = set()
    reads = 0
    # At least 5,000 reads and 2,000 swaps: on a loaded machine the swapping thread may get
    # little time, so the reads go on until the race has really been run (a minute at most).
    deadline = time.monotonic() + 60
    try:
        while (reads < 5000 or swaps < 2000) and time.monotonic() < deadline:
            try:
                got = f.read("swap/secret.txt")
            except ConfinementError as exc:
                got = "refused"
                messages.add(str(exc))
            seen[got] = seen.get(got, 0) + 1
            reads += 1
    finally:
        stop.set()
        thread.join()
    assert SECRET not in "".join(seen) + "".join(messages)
    assert set(seen) <= {"inside\n", "refused"}
    assert swaps > 1000
    assert seen.get("inside\n", 0) > 0, seen
    assert seen.get("refused", 0) > 0, seen


def test_a_root_that_does_not_exist_fails_when_the_agent_is_built(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        Agent(FunctionModel(lambda *_: "x"), capabilities=[Capability.files(tmp_path / "nope")])
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        Capability.files(tmp_path / "file")


def test_the_capability_compiles_to_tools_with_honest_flags(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    read_only = {t.name: t for t in Capability.files(root).tools()}
    assert set(read_only) == {"read_file", "list_files", "search_files"}
    assert all(t.read_only and not t.destructive for t in read_only.values())
    writable = {t.name: t for t in Capability.files(root, read_only=False).tools()}
    assert writable["write_file"].destructive
    assert writable["edit_file"].destructive
    assert not writable["write_file"].read_only


async def test_a_models_bad_path_is_a_tool_error_naming_the_rule(
    tree: tuple[Path, Path],
) -> None:
    root, _ = tree
    script = Script([[("read_file", {"path": "../outside/secret.txt"})], "done"])
    agent = Agent(script.model, capabilities=[Capability.files(root)])
    result = await agent.run("read it")
    assert result.ok
    [shown] = script.tool_results()
    assert "'..' is refused" in shown
    assert SECRET not in shown
