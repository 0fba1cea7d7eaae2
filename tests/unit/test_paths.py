"""Safe path resolution, on a real (tmp) directory tree."""

import os
from pathlib import Path

import pytest

from btrfsd.errors import InvalidArgument, NotFound
from btrfsd.fs.paths import check_name, resolve, split_path


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "a\0b", "x" * 256, "é" * 128])
def test_bad_names(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        check_name(bad)


def test_good_names() -> None:
    assert check_name("x" * 255) == "x" * 255
    assert check_name("2026-11-22 snap") == "2026-11-22 snap"


@pytest.mark.parametrize("bad", ["", "rel/path", "/a/../b", "/a/./b", "/a\0"])
def test_bad_paths(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        split_path(bad)


def test_trailing_and_double_slashes_fold() -> None:
    assert split_path("//a//b/") == ["a", "b"]


def test_resolve_refuses_symlinks(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    with pytest.raises(InvalidArgument, match="symbolic link"):
        resolve(str(tmp_path / "link" / "x"), must_exist=False)
    with pytest.raises(InvalidArgument, match="symbolic link"):
        resolve(str(tmp_path / "link"))


def test_resolve_missing(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        resolve(str(tmp_path / "nope"))
    with pytest.raises(NotFound):
        resolve(str(tmp_path / "no" / "such"), must_exist=False)
    with resolve(str(tmp_path / "new"), must_exist=False) as res:
        assert not res.exists and res.name == "new"


def test_open_parent_pins_the_checked_directory(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with resolve(str(tmp_path / "d" / "x"), must_exist=False) as res:
        # swap the directory for a symlink after the check: the fd still names the old one
        os.rename(tmp_path / "d", tmp_path / "moved")
        os.symlink("/etc", tmp_path / "d")
        fd = os.open(res.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600,
                     dir_fd=res.open_parent())
        os.close(fd)
        assert res.open_parent() == res.open_parent()  # one descriptor, reused
    assert (tmp_path / "moved" / "x").exists()
    assert not os.path.exists("/etc/x")


def test_fds_are_closed(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with resolve(str(tmp_path)) as res:
            res.open()
    assert len(os.listdir("/proc/self/fd")) == before


def _in_thread(fn: object, seconds: float = 5.0) -> BaseException | None:
    """Run ``fn`` in a daemon thread; fail the test if it blocks (a hung open)."""
    import threading

    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            fn()  # type: ignore[operator]
            outcome.append(None)
        except BaseException as e:  # handed back to the test
            outcome.append(e)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert outcome, "the call blocked (an open() waiting on a FIFO?)"
    return outcome[0]


def test_a_fifo_is_refused_not_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")

    def go() -> None:
        with resolve(str(tmp_path / "pipe")) as res:
            res.open()

    err = _in_thread(go)
    assert isinstance(err, InvalidArgument) and "FIFO" in str(err)


def test_the_object_checked_is_the_one_opened(tmp_path: Path) -> None:
    # A caller swaps the checked directory for a FIFO after the walk: the open gets the
    # directory that was checked, by its handle, and never blocks on the FIFO.
    d = tmp_path / "d"
    d.mkdir()
    (d / "marker").write_text("checked")
    with resolve(str(d)) as res:
        os.rename(d, tmp_path / "moved")
        os.mkfifo(d)
        fds: list[int] = []
        assert _in_thread(lambda: fds.append(res.open())) is None
        assert "marker" in os.listdir(fds[0])


def test_a_deep_path_needs_few_descriptors(tmp_path: Path) -> None:
    import resource

    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(1500):  # level by level: os.makedirs recurses once per level
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)
    deep = str(tmp_path) + "/d" * 1500
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # far fewer descriptors than components: the walk must not hold one per level
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 16, hard))
    try:
        with resolve(deep) as res:
            assert res.st is not None and res.open() >= 0
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        _remove_chain(tmp_path, 1500)  # shutil.rmtree would recurse 1,500 deep too


def _remove_chain(top: Path, depth: int) -> None:
    for level in range(depth, 0, -1):
        os.rmdir(str(top) + "/d" * level)
