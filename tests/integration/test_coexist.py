"""Default snapshots keep out of other tools' places (docs/coexistence.md).

The other tools' layouts are laid out with btrfs-progs the way snapper and btrbk make them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from conftest import World, btrfs

INVALID = "org.btrfsd1.Error.InvalidArgument"


def _tree(top: Path) -> list[tuple[str, int, int]]:
    """Every name under ``top`` (links not followed) with its mode and inode."""
    out = []
    for dirpath, dirnames, filenames in os.walk(top):
        for n in sorted(dirnames + filenames):
            p = Path(dirpath) / n
            st = p.lstat()
            out.append((str(p.relative_to(top)), st.st_mode, st.st_ino))
    return sorted(out)


def _subvolumes(world: World) -> set[tuple[str, str]]:
    """(id, path) of every subvolume. Not conftest.fs_state: its generations move when
    the atime updates of this file's directory walks reach a commit (it syncs only after
    listing), which is no change the daemon made."""
    rows = btrfs("subvolume", "list", str(world.mnt)).splitlines()
    return {(r.split()[1], r.split(" path ", 1)[1]) for r in rows}


def _subvolume(world: World, path: Path) -> None:
    r = world.fs_call(world.root, "CreateSubvolume", "sa{sv}", str(path), {})
    assert r["ok"], r


def _default_snapshot(world: World, source: Path) -> dict[str, Any]:
    return world.fs_call(world.root, "CreateSnapshot", "ssa{sv}", str(source), "", {})


def _made_in(world: World, source: Path, place: str) -> Path:
    r = _default_snapshot(world, source)
    assert r["ok"], r
    made = Path(r["body"][0])
    assert made.parent == source / place, made
    assert made.lstat().st_ino == 256  # a subvolume
    assert "ro=true" in btrfs("property", "get", "-ts", str(made), "ro")
    return made


def _plain_btrfsd_dir(p: Path) -> None:
    st = p.lstat()
    assert stat.S_ISDIR(st.st_mode) and st.st_ino != 256, "not a plain directory"
    assert stat.S_IMODE(st.st_mode) == 0o750


def test_snapper_layout_gets_its_own_place(world: World) -> None:
    d = world.scratch()
    home = d / "home"
    _subvolume(world, home)
    # As snapper create-config and snapper create do: .snapshots is a subvolume, each
    # snapshot a numbered directory with info.xml and a read-only snapshot subvolume.
    btrfs("subvolume", "create", str(home / ".snapshots"))
    (home / ".snapshots").chmod(0o750)
    (home / ".snapshots" / "1").mkdir()
    btrfs("subvolume", "snapshot", "-r", str(home), str(home / ".snapshots" / "1" / "snapshot"))
    (home / ".snapshots" / "1" / "info.xml").write_text(
        "<?xml version=\"1.0\"?>\n<snapshot>\n  <type>single</type>\n  <num>1</num>\n"
        "  <date>2026-11-28 10:00:00</date>\n</snapshot>\n")
    before = _tree(home / ".snapshots")

    first = _made_in(world, home, ".btrfsd-snapshots")
    second = _made_in(world, home, ".btrfsd-snapshots")
    assert first.name < second.name
    _plain_btrfsd_dir(home / ".btrfsd-snapshots")
    assert _tree(home / ".snapshots") == before  # nothing new among snapper's


def test_btrfsd_own_snapshots_dir_is_unchanged(world: World) -> None:
    d = world.scratch()
    data = d / "data"
    _subvolume(world, data)
    first = _made_in(world, data, ".snapshots")  # the earlier btrfsd, or this one first
    _plain_btrfsd_dir(data / ".snapshots")
    second = _made_in(world, data, ".snapshots")
    assert first.name < second.name
    assert not (data / ".btrfsd-snapshots").exists()


def test_btrbk_snapshot_dir_gets_its_own_place_for_good(world: World) -> None:
    d = world.scratch()
    vol = d / "vol"
    _subvolume(world, vol)
    _subvolume(world, vol / "home")
    # btrbk with "volume <vol>", "snapshot_dir .snapshots", "subvolume home"; btrbk wants
    # snapshot_dir made by hand.
    (vol / ".snapshots").mkdir()
    btrbk_snap = vol / ".snapshots" / "home.20261128T1000"
    btrfs("subvolume", "snapshot", "-r", str(vol / "home"), str(btrbk_snap))
    before = _tree(vol / ".snapshots")

    _made_in(world, vol, ".btrfsd-snapshots")
    assert _tree(vol / ".snapshots") == before
    # The place stays even when btrbk's snapshots are gone (no flipping back and forth).
    btrfs("subvolume", "delete", str(btrbk_snap))
    _made_in(world, vol, ".btrfsd-snapshots")
    assert os.listdir(vol / ".snapshots") == []


@pytest.mark.parametrize("name", [".snapshots", ".btrfsd-snapshots"])
def test_a_linked_snapshot_place_is_refused(world: World, name: str) -> None:
    d = world.scratch()
    src = d / "src"
    _subvolume(world, src)
    elsewhere = d / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "home.20261128").mkdir()  # looks like btrbk's, behind the link: not looked at
    os.symlink(elsewhere, src / name)
    before = _tree(d)
    state = _subvolumes(world)

    r = _default_snapshot(world, src)
    assert not r["ok"] and r["error"] == INVALID, r
    assert name in r["message"], r
    assert _subvolumes(world) == state
    # nothing made through the link, and no fallback to the other place
    assert _tree(d) == before


def test_a_place_another_user_made_first_is_refused(world: World) -> None:
    # In a shared, sticky subvolume root another user can make the snapshot directory
    # before root does; root's snapshots must not land in a directory that user owns.
    import pwd

    from sandbox import TEST_USER

    uid = pwd.getpwnam(TEST_USER).pw_uid
    for name in (".snapshots", ".btrfsd-snapshots"):
        d = world.scratch()
        src = d / "shared"
        _subvolume(world, src)
        os.chmod(src, 0o1777)
        (src / name).mkdir()
        os.chown(src / name, uid, -1)
        before = _subvolumes(world)
        r = _default_snapshot(world, src)
        assert not r["ok"] and r["error"] == INVALID, r
        assert f"uid {uid}" in r["message"], r
        assert _subvolumes(world) == before and os.listdir(src / name) == []
