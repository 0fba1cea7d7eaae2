"""A hostile local user racing the daemon's recursive delete and snapshot (issue 19, item 2).

The user owns a directory ``a`` inside the subvolume being worked on; ``a`` holds a nested
subvolume ``n``. Beside it lies ``b``, a symbolic link to a directory outside that holds
another subvolume named ``n``. While root's call runs, the user swaps ``a`` and ``b`` with
renameat2(RENAME_EXCHANGE) as fast as they can (here: a thread of this root process, as in
test_races.py). Whatever the timing, nothing outside may be deleted, created, removed or
get its read-only flag changed; the call either succeeds or names what it skipped.
Each test is bounded to a few seconds.

A schedule's cleanup likewise deletes by subvolume id after checking the UUID it recorded,
never by a path rebuilt from the filesystem's first mount point (wrong for @/@home).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import btrfsutil
import pytest
from conftest import V, World
from test_jobs import add_fs, remove_fs

from btrfsd.core.filesystems import Filesystem, Registry
from btrfsd.core.schedules import Schedules, parse_schedule
from btrfsd.core.subvolumes import SubvolumeInfo, Subvolumes
from btrfsd.fs import uuidtree

RENAME_EXCHANGE = 2
ROUNDS = 60
BUDGET = 5.0  # seconds of rounds per test
_libc = ctypes.CDLL(None, use_errno=True)


def _exchange(a: Path, b: Path) -> bool:
    return _libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), RENAME_EXCHANGE) == 0


@contextmanager
def swapping(*pairs: tuple[Path, Path]) -> Iterator[None]:
    """Exchange each pair of names over and over (missing names are simply retried)."""
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            for a, b in pairs:
                _exchange(a, b)

    t = threading.Thread(target=swap, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(5)


def _ro(p: Path) -> bool:
    return btrfsutil.get_subvolume_read_only(str(p))  # type: ignore[no-any-return]


def _uuid(p: Path) -> bytes:
    return btrfsutil.subvolume_info(str(p)).uuid  # type: ignore[no-any-return]


def _remove(p: Path) -> None:
    """Remove what a round left (no swapping runs any more)."""
    if p.is_symlink() or not p.exists():
        return
    if btrfsutil.is_subvolume(str(p)):
        for sub in [p] + [p / s for s, _ in btrfsutil.SubvolumeIterator(str(p))]:
            if sub.exists() and _ro(sub):
                btrfsutil.set_subvolume_read_only(str(sub), False)
        btrfsutil.delete_subvolume(str(p), recursive=True)
        return
    for child in list(p.iterdir()):
        if child.is_dir() and not child.is_symlink():
            _remove(child)
        else:
            child.unlink()
    p.rmdir()


def _outside(d: Path, read_only: bool) -> tuple[Path, dict[str, bytes]]:
    """``out/n`` (with ``out/n/m`` when ``read_only``): the subvolumes root must not touch."""
    out = d / "out"
    out.mkdir()
    btrfsutil.create_subvolume(str(out / "n"))
    if read_only:
        btrfsutil.create_subvolume(str(out / "n" / "m"))
        btrfsutil.set_subvolume_read_only(str(out / "n"), True)
    return out, _ids(out)


def _ids(out: Path) -> dict[str, bytes]:
    found = {"n": _uuid(out / "n")}
    if (out / "n" / "m").exists():
        found["m"] = _uuid(out / "n" / "m")
    return found


def _check_outside(out: Path, before: dict[str, bytes], read_only: bool, what: str) -> None:
    assert sorted(os.listdir(out)) == ["n"], f"{what}: something appeared in or left {out}"
    assert (out / "n").exists(), f"{what}: root deleted the outside subvolume"
    assert _ids(out) == before, f"{what}: the outside subvolumes changed"
    assert _ro(out / "n") == read_only, f"{what}: root changed the outside read-only flag"


def _rounds(body: Callable[[int], None]) -> int:
    deadline = time.monotonic() + BUDGET
    done = 0
    while done < ROUNDS and time.monotonic() < deadline:
        body(done)
        done += 1
    return done


def test_recursive_delete_never_leaves_the_subvolume(world: World) -> None:
    base = world.scratch()
    outcomes: list[str] = []

    def one(k: int) -> None:
        # odd rounds: n is read-only and holds m, so n must be made writable first
        read_only = k % 2 == 1
        d = base / f"r{k}"
        d.mkdir()
        out, before = _outside(d, read_only)
        top = d / "top"
        btrfsutil.create_subvolume(str(top))
        (top / "a").mkdir()
        btrfsutil.create_subvolume(str(top / "a" / "n"))
        if read_only:
            btrfsutil.create_subvolume(str(top / "a" / "n" / "m"))
            btrfsutil.set_subvolume_read_only(str(top / "a" / "n"), True)
        os.symlink(out, top / "b")
        try:
            with swapping((top / "a", top / "b")):
                r = world.fs_call(world.root, "DeleteSubvolume", "sa{sv}", str(top),
                                  {"recursive": V("b", True)})
            _check_outside(out, before, read_only, f"round {k}")
            if r["ok"]:
                assert not top.exists()
                outcomes.append("deleted")
            else:
                # the skipped child is named, wherever the swap had put it
                assert "a/n" in r["message"] or "b/n" in r["message"], r
                outcomes.append("skipped")
        finally:
            _remove(top)
            _remove(d)

    assert _rounds(one) >= 5, "too few rounds in the time budget"
    print("recursive delete outcomes:", outcomes)


def test_recursive_read_only_snapshot_never_leaves_the_snapshot(world: World) -> None:
    base = world.scratch()
    outcomes: list[str] = []

    def one(k: int) -> None:
        d = base / f"r{k}"
        d.mkdir()
        out, before = _outside(d, False)
        src = d / "src"
        btrfsutil.create_subvolume(str(src))
        (src / "a").mkdir()
        btrfsutil.create_subvolume(str(src / "a" / "n"))
        os.symlink(out, src / "b")  # copied into the snapshot as it is
        inner = _uuid(src / "a" / "n")
        snap = d / f"snap-{uuid.uuid4().hex[:6]}"
        try:
            # swapped in the new snapshot as soon as it exists, and in the source
            with swapping((snap / "a", snap / "b"), (src / "a", src / "b")):
                r = world.fs_call(world.root, "CreateSnapshot", "ssa{sv}", str(src), str(snap),
                                  {"recursive": V("b", True)})
            _check_outside(out, before, False, f"round {k}")
            if r["ok"]:
                nested = [snap / p for p, _ in btrfsutil.SubvolumeIterator(str(snap))]
                assert len(nested) == 1 and nested[0].name == "n", nested
                assert btrfsutil.subvolume_info(str(nested[0])).parent_uuid == inner
                assert _ro(snap) and _ro(nested[0])
                outcomes.append("made")
            else:
                assert not snap.exists(), "a failed recursive snapshot left its remains"
                outcomes.append("refused")
        finally:
            _remove(snap)
            _remove(d)

    assert _rounds(one) >= 5, "too few rounds in the time budget"
    print("recursive snapshot outcomes:", outcomes)


# -- schedule cleanup by id -------------------------------------------------------------------
class StaleListing(Subvolumes):
    """Subvolumes whose listing hands out an older id for some UUIDs, as if a snapshot had
    been deleted and its id taken by another between cleanup's listing and its delete."""

    def __init__(self, registry: Registry) -> None:
        super().__init__(registry)
        self.ids: dict[str, int] = {}

    async def list(self, fs: Filesystem, *, snapshots_of: str = "") -> list[SubvolumeInfo]:
        found = await super().list(fs, snapshots_of=snapshots_of)
        return [s._replace(id=self.ids.get(s.uuid, s.id)) for s in found]

    async def named_by_uuid(self, fs: Filesystem) -> uuidtree.Named | None:
        # what a scheduled run reads (the UUID tree), just as stale
        named = await super().named_by_uuid(fs)
        if named is not None:
            real = named.id_of
            named.id_of = lambda u: self.ids.get(u, real(u))  # type: ignore[method-assign]
        return named


@pytest.fixture
def layout(world: World) -> Iterator[tuple[Path, Path]]:
    """A filesystem mounted as @ (first: shorter mount point) and @home, its top level
    not mounted at all; yields both mount points."""
    fs = add_fs(world, "1G", "btrfsd-layout", 0)
    for name in ("@", "@home"):
        btrfsutil.create_subvolume(str(fs.mount_point / name))
    root, home = world.sb.workdir / "r", world.sb.workdir / "home-of-layout"
    mounted: list[Path] = []
    try:
        for where, sub in ((root, "@"), (home, "@home")):
            where.mkdir(exist_ok=True)
            subprocess.run(["mount", "-t", "btrfs", "-o", f"subvol={sub}", fs.device,
                            str(where)], check=True)
            mounted.append(where)
        subprocess.run(["umount", str(fs.mount_point)], check=True)
        yield root, home
    finally:
        for where in reversed(mounted):
            subprocess.run(["umount", str(where)], check=False)
        remove_fs(world, fs)


def test_schedule_cleanup_deletes_by_id_and_checks_the_uuid(
        layout: tuple[Path, Path], tmp_path: Path) -> None:
    root, home = layout
    start = datetime(2026, 9, 1, tzinfo=UTC).timestamp()
    clock = [start]

    def snaps() -> list[str]:
        return sorted(os.listdir(home / ".snapshots"))

    async def run() -> None:
        registry = Registry()
        await registry.rescan()
        subvolumes = StaleListing(registry)
        sched = Schedules(subvolumes, tmp_path / "etc", tmp_path / "var",
                          clock=lambda: clock[0], tz=UTC)
        await sched.load()
        fs, _ = await subvolumes.resolve(str(home))
        assert fs.primary_mount.mount_point == str(root)  # @home is not the first mount
        spec = {"subvolume": str(home), "every": 60}
        await sched.set(parse_schedule("h", {**spec, "keep_last": 1}), replace=False)
        for k in range(3):
            clock[0] = start + 60 * k
            result = await sched.run("h")
            assert not result.failed, result.failed
            assert len(snaps()) == 1 and Path(result.snapshot).name == snaps()[0]

        await sched.set(parse_schedule("h", {**spec, "keep_last": 2}), replace=True)
        clock[0] += 60
        assert not (await sched.run("h")).failed
        older, newer = snaps()
        info = {n: btrfsutil.subvolume_info(str(home / ".snapshots" / n)) for n in snaps()}
        # the older one's id now (says the stale listing) belongs to the newer one
        subvolumes.ids[str(uuid.UUID(bytes=info[older].uuid))] = info[newer].id
        await sched.set(parse_schedule("h", {**spec, "keep_last": 1}), replace=True)
        result = await sched.cleanup("h", dry_run=False)
        assert not result.deleted and len(result.failed) == 1, result
        assert "UUID" in result.failed[0][1]
        assert snaps() == [older, newer]  # neither deleted
        subvolumes.ids.clear()
        result = await sched.cleanup("h", dry_run=False)
        assert len(result.deleted) == 1 and not result.failed, result
        assert snaps() == [newer]

    asyncio.run(run())
