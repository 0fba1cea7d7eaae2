"""btrfsctl's lean path (snapshot, snapshot list) prints, and exits, exactly as the full
path (argparse, asyncio, dbus-fast, rich) does for the same command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import World
from sandbox import TEST_USER
from test_cli import CTL
from test_odd_names import _bus, _delete_after

FULL = ["-c", "import sys; from btrfsd.cli.commands import run; sys.exit(run(sys.argv[1:]))"]


def both(world: World, *args: str | bytes, user: str | None = None
         ) -> tuple[subprocess.CompletedProcess[bytes], subprocess.CompletedProcess[bytes]]:
    """The same command line through the lean entry point and through the full path."""
    prefix = world.sb.as_user(user) if user else []
    kw = dict(env=world.sb.env, capture_output=True, stdin=subprocess.DEVNULL, cwd="/")
    lean = subprocess.run([*prefix, CTL, *args], **kw)  # type: ignore[call-overload]
    full = subprocess.run([*prefix, sys.executable, *FULL, *args], **kw)  # type: ignore[call-overload]
    return lean, full


def same(world: World, *args: str | bytes, user: str | None = None) -> bytes:
    lean, full = both(world, *args, user=user)
    assert (lean.returncode, lean.stdout, lean.stderr) == (
        full.returncode, full.stdout, full.stderr), args
    return lean.stdout


def test_listings_and_errors_are_the_full_paths(world: World) -> None:
    d = world.scratch()
    src = d / "home"
    assert subprocess.run([CTL, "subvolume", "create", str(src)], env=world.sb.env,
                          capture_output=True).returncode == 0
    (src / ".snapshots").mkdir()
    names = [b"20261122T043000Z", b"with  spaces", b"[bold]markup", b":100:",
             b"bad\xffbyte", "wide-日本".encode(), b"back\\slash", b"10:26:20", b"tab\tname"]
    made = [os.fsencode(src / ".snapshots") + b"/" + name for name in names]
    try:
        for raw in made:
            r = subprocess.run([CTL, "snapshot", str(src), raw], env=world.sb.env,
                               capture_output=True)
            assert r.returncode == 0, r.stderr
        listed = same(world, "snapshot", "list", str(src))
        assert b"20261122T043000Z" in listed
        rows = json.loads(same(world, "--json", "snapshot", "list", str(src)))
        assert sorted(r["path"].rsplit("/", 1)[1] for r in rows) == sorted(map(_bus, names))
        same(world, "snapshot", "list", str(src / ".snapshots"))  # none: an empty table
        same(world, "snapshot", "list", str(d / "missing"))
        same(world, "--json", "snapshot", "list", "/dev/shm")
        same(world, "snapshot", str(src), str(src / ".snapshots" / "20261122T043000Z"))
        same(world, "--json", "snapshot", str(src),
             str(src / ".snapshots" / "20261122T043000Z"))
        same(world, "snapshot", str(src), str(d / "u"), user=TEST_USER)
        same(world, "snapshot", "list", str(src), user=TEST_USER)  # reading is allowed
    finally:
        for raw in made:  # other tests compare whole listings with btrfs-progs' output
            _delete_after(raw)


def test_snapshots_are_reported_as_the_full_path_does(world: World) -> None:
    d = world.scratch()
    src = d / "s"
    assert subprocess.run([CTL, "subvolume", "create", str(src)], env=world.sb.env,
                          capture_output=True).returncode == 0
    for k, args in enumerate(((), ("--writable",), ("--json",),
                              ("--json", "--writable", "--recursive"))):
        lean_dest, full_dest = d / f"lean{k}", d / f"full{k}"
        lean = subprocess.run([CTL, "snapshot", str(src), str(lean_dest), *args],
                              env=world.sb.env, capture_output=True, text=True)
        full = subprocess.run([sys.executable, *FULL, "snapshot", str(src), str(full_dest),
                               *args], env=world.sb.env, capture_output=True, text=True)
        assert lean.returncode == full.returncode == 0, (lean.stderr, full.stderr)
        assert lean.stdout.replace(lean_dest.name, full_dest.name) == full.stdout
        assert lean.stderr == full.stderr == ""
        assert Path(lean_dest).is_dir()
