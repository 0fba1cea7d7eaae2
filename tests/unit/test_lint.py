"""The code base stays ruff- and mypy-clean (part of the suite so CI enforces it)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_ruff() -> None:
    r = subprocess.run([str(BIN / "ruff"), "check", "btrfsd", "tests", "loopdev-fixtures", "bench",
                        "scripts"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy() -> None:
    r = subprocess.run([str(BIN / "mypy"), "--no-incremental"], cwd=REPO, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_daemon_never_spawns_btrfs() -> None:
    for path in (REPO / "btrfsd").rglob("*.py"):
        text = path.read_text()
        if path.parent.name == "notify":
            # btrfsd-notify runs as the user, apart from the daemon: it starts the user's
            # "open detail" command (btrfsctl in a terminal) and asks systemctl --user,
            # never btrfs-progs
            assert '"btrfs"' not in text, f"{path} spawns btrfs"
            continue
        if path == REPO / "btrfsd" / "fs" / "receive.py":
            # the one exception (README, layout): a backup's receive side is btrfs-progs'
            # stream interpreter, started with a fixed argv, never through a shell
            assert "shell=True" not in text and "os.system" not in text
            continue
        assert "subprocess" not in text, f"{path} spawns processes"
