"""CompareSnapshots on real snapshots: every kind of change found, checked against
``btrfs send --no-data -p OLD NEW | btrfs receive --dump``; a live ``new`` leaves no
temporary snapshot; paging; bad input gets named errors and changes nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import DENIED, V, World, btrfs, fs_state

E = "org.btrfsd1.Error."
TEMP = ".btrfsd-compare-"
Row = tuple[str, str, str, str, int, bool, bool]


def compare(w: World, old: Path | str, new: Path | str, caller: Any = None,
            **opts: Any) -> dict[str, Any]:
    return w.fs_call(caller or w.root, "CompareSnapshots", "ssa{sv}", str(old), str(new),
                     opts)


def rows(reply: dict[str, Any]) -> list[Row]:
    assert reply["ok"], reply
    total, columns = reply["body"]
    out = list(zip(*columns, strict=True))
    assert total >= len(out)
    return out  # type: ignore[return-value]


def snap(src: Path, dst: Path) -> Path:
    btrfs("subvolume", "snapshot", "-r", str(src), str(dst))
    return dst


def settled_state(w: World) -> tuple[str, str, str, str]:
    """fs_state after a commit: writes of earlier tests must not move a generation
    between two looks."""
    btrfs("filesystem", "sync", str(w.mnt))
    return fs_state(w.mnt)


def temporaries(w: World) -> list[str]:
    return [ln for ln in btrfs("subvolume", "list", str(w.mnt)).splitlines() if TEMP in ln]


def dumped(old: Path, new: Path) -> set[str]:
    """The paths btrfs-progs' dump of the stream names (final names, no orphans, not
    the root), relative to the subvolume."""
    send = subprocess.Popen(["btrfs", "send", "-q", "--no-data", "-p", str(old), str(new)],
                            stdout=subprocess.PIPE)
    dump = subprocess.run(["btrfs", "receive", "--dump"], stdin=send.stdout,
                          capture_output=True, text=True, check=True).stdout
    assert send.wait() == 0
    prefix = f"./{new.name}/"
    named: set[str] = set()
    for line in dump.splitlines()[1:]:
        cmd, path, *rest = line.split()
        found = [path]
        if cmd == "rename":
            found.append(rest[0].removeprefix("dest="))
        for p in found:
            p = p.removeprefix(prefix)
            if p and not re.fullmatch(r"o\d+-\d+-\d+(/.*)?", p):
                named.add(p)
    return named


@pytest.fixture(scope="module")
def changed(world: World) -> tuple[Path, Path, Path]:
    """A subvolume, a snapshot, one change of every kind, a second snapshot."""
    d = world.scratch()
    sv = d / "sv"
    btrfs("subvolume", "create", str(sv))
    for sub in ("a/b", "c", "d", "e"):
        (sv / sub).mkdir(parents=True)
    for name, text in (("a/b/f1", "one"), ("a/keep", "x"), ("c/g", "gg"), ("d/h", "h"),
                       ("trunc", "0123456789"), ("x", "file"), ("hl1", "hl"),
                       ("meta", "m"), ("owned", "o"), ("e/moved", "mv")):
        (sv / name).write_text(text)
    os.link(sv / "hl1", sv / "hl2")
    os.symlink("f1", sv / "a/b/ln")
    s1 = snap(sv, d / "s1")
    (sv / "a/new").write_text("new file")                 # create
    (sv / "a/keep").unlink()                               # delete
    (sv / "a/b").rename(sv / "c/b2")                       # rename a directory across
    (sv / "e/moved").rename(sv / "d/moved2")               # rename a file across
    os.truncate(sv / "trunc", 3)                           # truncate
    os.setxattr(sv / "meta", "user.k", b"v")               # xattr
    os.chmod(sv / "d/h", 0o600)                            # chmod
    os.chown(sv / "owned", 4321, 4321)                     # chown
    (sv / "x").unlink()                                    # replace a file by a dir
    (sv / "x").mkdir()
    os.link(sv / "c/g", sv / "a/glink")                    # a new hard link
    (sv / "hl2").unlink()                                  # one name of two goes
    with open(sv / "c/g", "a") as f:                       # data
        f.write("more")
    os.symlink("nowhere", sv / "sym")                      # a new symlink
    s2 = snap(sv, d / "s2")
    return sv, s1, s2


def test_every_kind_of_change_is_found(world: World, changed: tuple[Path, Path, Path]
                                       ) -> None:
    _sv, s1, s2 = changed
    found = {(r[0], r[1]): r for r in rows(compare(world, s1, s2))}
    expect = {
        ("a/new", "added"): ("", "file", 8),
        ("a/keep", "deleted"): ("", "file", 1),
        ("c/b2", "renamed"): ("a/b", "dir", 0),
        ("d/moved2", "renamed"): ("e/moved", "file", 2),
        ("trunc", "modified"): ("", "file", 3),
        ("meta", "metadata"): ("", "file", 1),
        ("d/h", "metadata"): ("", "file", 1),
        ("owned", "metadata"): ("", "file", 1),
        ("x", "deleted"): ("", "file", 4),
        ("x", "added"): ("", "dir", 0),
        ("a/glink", "linked"): ("c/g", "file", 6),
        ("hl2", "deleted"): ("", "file", 2),
        ("c/g", "modified"): ("", "file", 6),
        ("sym", "added"): ("", "symlink", 7),
    }
    for key, (old_path, kind, size) in expect.items():
        assert key in found, (key, "\n".join(map(str, sorted(found.values()))),
                              sorted(dumped(s1, s2)))
        assert found[key][2:5] == (old_path, kind, size), found[key]
    assert found[("c/g", "modified")][5] and not found[("meta", "metadata")][5]
    assert found[("meta", "metadata")][6]
    # and nothing the kernel's own stream (as btrfs-progs reads it) leaves out or adds
    ours = {r[0] for r in found.values()} | {r[2] for r in found.values() if r[2]}
    theirs = dumped(s1, s2)
    assert theirs - ours <= {"c/g"} | set(), theirs - ours  # a link's target only
    assert {r[0] for r in found.values() if r[1] != "deleted"} <= theirs | {"c/b2"}


def test_live_subvolume_through_a_temporary_snapshot(
        world: World, changed: tuple[Path, Path, Path]) -> None:
    sv, s1, s2 = changed
    (sv / "later").write_text("after s2")
    live = rows(compare(world, s1, sv))
    assert ("later", "added") in {(r[0], r[1]) for r in live}
    assert {r[:2] for r in rows(compare(world, s1, s2))} <= {r[:2] for r in live}
    assert not temporaries(world)
    # a next page of a live comparison is the same result, not a new snapshot's
    page = rows(compare(world, s1, sv, offset=V("t", 1), limit=V("t", 2)))
    assert page == live[1:3]
    assert not temporaries(world)
    (sv / "later").unlink()


def test_paging(world: World, changed: tuple[Path, Path, Path]) -> None:
    _sv, s1, s2 = changed
    everything = compare(world, s1, s2)
    total = everything["body"][0]
    pages: list[Row] = []
    for offset in range(0, total + 3, 3):
        r = compare(world, s1, s2, offset=V("t", offset), limit=V("t", 3))
        assert r["body"][0] == total
        pages += rows(r)
    assert pages == rows(everything)
    assert rows(compare(world, s1, s2, offset=V("t", total + 10))) == []


def test_leftover_temporary_snapshot_removed_at_start(world: World) -> None:
    d = world.scratch()
    btrfs("subvolume", "create", str(d / "sv"))
    snap(d / "sv", d / f"{TEMP}leftover")
    assert temporaries(world)
    world.sb.restart_daemon()
    assert not temporaries(world)
    assert (d / "sv").exists()


@pytest.fixture(scope="module")
def bad(world: World) -> Path:
    d = world.scratch()
    for name in ("sv", "other"):
        btrfs("subvolume", "create", str(d / name))
    snap(d / "sv", d / "s1")
    snap(d / "sv", d / "s2")
    snap(d / "other", d / "o1")
    btrfs("subvolume", "snapshot", str(d / "sv"), str(d / "rw"))  # writable
    (d / "plain").mkdir()
    os.symlink("s1", d / "link")
    return d


def _other_fs(w: World) -> Path:
    other = w.sb.filesystems[1].mount_point
    target = other / "cmp-snap"
    if not target.exists():
        btrfs("subvolume", "create", str(other / "cmp-src"))
        snap(other / "cmp-src", target)
    return target


BAD: dict[str, tuple[str, str, str]] = {
    "snapshots of different subvolumes": ("{d}/s1", "{d}/o1", "InvalidArgument"),
    "old newer than new": ("{d}/s2", "{d}/s1", "InvalidArgument"),
    "the same snapshot twice": ("{d}/s1", "{d}/s1", "InvalidArgument"),
    "writable old": ("{d}/rw", "{d}/sv", "InvalidArgument"),
    "old is the live subvolume": ("{d}/sv", "{d}/s1", "InvalidArgument"),
    "symlink as old": ("{d}/link", "{d}/s2", "InvalidArgument"),
    "not a subvolume": ("{d}/plain", "{d}/s2", "InvalidArgument"),
    "relative path": ("s1", "{d}/s2", "InvalidArgument"),
    "dot-dot": ("{d}/../x/s1", "{d}/s2", "InvalidArgument"),
    "missing": ("{d}/nope", "{d}/s2", "NotFound"),
    "outside any btrfs": ("/run", "{d}/s2", "NotBtrfs"),
    "other filesystem": ("{d}/s1", "{other}", "InvalidArgument"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input(world: World, bad: Path, name: str) -> None:
    old, new, error = BAD[name]
    fill = {"d": bad, "other": _other_fs(world) if "{other}" in old + new else ""}
    before = settled_state(world)
    r = compare(world, old.format(**fill), new.format(**fill))
    assert not r["ok"] and r["error"] == E + error, r
    assert fs_state(world.mnt) == before
    # an unprivileged caller is refused before anything is looked at
    r = compare(world, old.format(**fill), new.format(**fill), caller=world.user)
    assert not r["ok"] and r["error"] in DENIED, r
    assert str(bad) not in r["message"]


def test_bad_options(world: World, bad: Path) -> None:
    for opts in ({"limit": V("t", 0)}, {"limit": V("t", 100_001)}, {"offset": V("s", "1")},
                 {"bogus": V("b", True)}):
        r = compare(world, bad / "s1", bad / "s2", **opts)
        assert not r["ok"] and r["error"] == E + "InvalidArgument", r


def test_unprivileged_caller_makes_no_temporary_snapshot(world: World, bad: Path) -> None:
    before = settled_state(world)
    for interactive in (False, True):
        r = world.fs_call(world.user, "CompareSnapshots", "ssa{sv}", str(bad / "s1"),
                          str(bad / "sv"), {}, interactive=interactive)
        assert not r["ok"] and r["error"] in DENIED, r
    assert fs_state(world.mnt) == before and not temporaries(world)


def test_btrfsctl_diff(world: World, changed: tuple[Path, Path, Path]) -> None:
    _sv, s1, s2 = changed
    ctl = str(Path(sys.executable).parent / "btrfsctl")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([ctl, *args], env=world.sb.env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, cwd="/")

    r = run("diff", "--json", str(s1), str(s2))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["total"] == len(data["changes"]) == len(rows(compare(world, s1, s2)))
    assert data["counts"]["renamed"] == 2 and data["counts"]["added"] == 3
    r = run("diff", str(s1))  # NEW: the live subvolume s1 was taken of
    assert r.returncode == 0, r.stderr
    assert "a/new" in r.stdout and "added" in r.stdout
    assert r.stdout.strip().splitlines()[-1].startswith(f"{data['total']} changed path(s): ")
    assert not temporaries(world)
