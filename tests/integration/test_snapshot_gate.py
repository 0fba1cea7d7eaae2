"""core/gate.py on a real filesystem: a snapshot whose path walks and checks run before
its caller is known to be allowed (root's CreateSnapshot runs while polkit is asked)
makes nothing, not even the default snapshot directory, when its gate is shut; it is
made once the gate opens; and a mistake in what it was asked is told without waiting
for the gate (the checks come first)."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import btrfsutil
import pytest
from conftest import World

from btrfsd.core.filesystems import Registry
from btrfsd.core.gate import Gate, GateShut
from btrfsd.core.subvolumes import Subvolumes
from btrfsd.errors import AlreadyExists, Busy, NotFound


def snapshot(source: Path, dest: str, gate: Gate) -> str:
    async def go() -> str:
        registry = Registry()
        await registry.rescan()
        subvolumes = Subvolumes(registry)
        fs, _ = await subvolumes.resolve(str(source))
        return await subvolumes.snapshot(fs, str(source), dest, gate=gate)
    return asyncio.run(go())


def test_a_shut_gate_makes_nothing(world: World) -> None:
    d = world.scratch()
    btrfsutil.create_subvolume(str(d / "src"))
    for dest in ("", str(d / "snap")):  # the default place, and one given
        gate = Gate()
        gate.shut()
        with pytest.raises(GateShut):
            snapshot(d / "src", dest, gate)
        assert sorted(p.name for p in d.iterdir()) == ["src"]
        assert not (d / "src" / ".snapshots").exists()


def test_an_open_gate_lets_the_snapshot_be_made(world: World) -> None:
    d = world.scratch()
    btrfsutil.create_subvolume(str(d / "src"))
    for dest in ("", str(d / "snap")):
        gate = Gate()
        threading.Timer(0.2, gate.open).start()  # the answer comes later
        made = Path(snapshot(d / "src", dest, gate))
        assert btrfsutil.is_subvolume(str(made)) and btrfsutil.get_subvolume_read_only(
            str(made))
    assert (d / "snap").exists() and len(list((d / "src" / ".snapshots").iterdir())) == 1


class Watched(Gate):
    """A gate that records being waited at, then lets the work go on."""

    def __init__(self) -> None:
        super().__init__()
        self.waited = 0

    def wait(self) -> None:
        self.waited += 1
        self.open()
        super().wait()


def test_the_checks_come_before_the_gate(world: World) -> None:
    d = world.scratch()
    btrfsutil.create_subvolume(str(d / "src"))
    (d / "taken").mkdir()
    for source, dest, error in ((d / "nothing-here", str(d / "snap"), NotFound),
                                (d / "src", str(d / "taken"), AlreadyExists)):
        gate = Watched()
        with pytest.raises(error):
            snapshot(source, dest, gate)
        assert gate.waited == 0  # told without waiting for polkit's answer
    gate = Watched()
    snapshot(d / "src", str(d / "snap"), gate)
    assert gate.waited == 1 and btrfsutil.is_subvolume(str(d / "snap"))


class Held(Gate):
    """A gate that says when its work reached it, and stays undecided until opened."""

    def __init__(self) -> None:
        super().__init__()
        self.reached = threading.Event()

    def wait(self) -> None:
        self.reached.set()
        super().wait()


def test_calls_held_at_their_gates_choose_different_names(world: World) -> None:
    """Two snapshots to the default place, both waiting for polkit's answer at once:
    each chooses its name only once it may go on, so the second gets ``-1`` instead of
    failing with AlreadyExists (review of issue 11's fifth step)."""
    d = world.scratch()
    btrfsutil.create_subvolume(str(d / "src"))
    (d / "src" / ".snapshots").mkdir(mode=0o750)
    gates = [Held(), Held()]
    made: list[str] = []
    errors: list[BaseException] = []

    def one(gate: Gate) -> None:
        try:
            made.append(snapshot(d / "src", "", gate))
        except BaseException as e:  # told to the test below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(g,)) for g in gates]
    for t in threads:
        t.start()
    for g in gates:
        assert g.reached.wait(30)
    for g in gates:
        g.open()
    for t in threads:
        t.join(30)
    assert not errors, errors
    names = sorted(Path(m).name for m in made)
    assert len(names) == 2 and names[0] != names[1], names


class Swapping(Gate):
    """A gate at which, while the call waits, someone renames the source away and puts
    a directory of their own where the default place was (a user who may rename an
    ancestor of the source, in their home say)."""

    def __init__(self, home: Path) -> None:
        super().__init__()
        self.home = home

    def wait(self) -> None:
        if not (self.home / "vm.old").exists():
            os.rename(self.home / "vm", self.home / "vm.old")
            os.makedirs(self.home / "vm" / ".snapshots")
            for p in (self.home / "vm", self.home / "vm" / ".snapshots"):
                os.chown(p, 4321, 4321)
        self.open()
        super().wait()


def test_the_default_place_checked_is_the_one_snapshotted_into(world: World) -> None:
    """The default place's owner is checked on the directory found from the source;
    the snapshot is made by name later. If another directory took that name meanwhile,
    the call is Busy and nothing is made in either place (review of issue 11's fifth
    step)."""
    d = world.scratch()
    home = d / "home"
    home.mkdir()
    btrfsutil.create_subvolume(str(home / "vm"))
    (home / "vm" / ".snapshots").mkdir(mode=0o750)
    with pytest.raises(Busy):
        snapshot(home / "vm", "", Swapping(home))
    assert not list((home / "vm" / ".snapshots").iterdir())
    assert not list((home / "vm.old" / ".snapshots").iterdir())
