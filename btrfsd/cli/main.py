"""btrfsctl: command-line client of btrfsd (docs/cli.md).

Start-up is most of a short command's time, so this module imports nothing heavy: the
commonest commands (lean.py) run on the standard library alone, everything else through
the full path (commands.py: argparse, asyncio, dbus-fast, rich), imported only then.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing costs ~5 ms at start-up; mypy still reads the block below
if TYPE_CHECKING:
    import argparse


def build_parser() -> argparse.ArgumentParser:
    """The full parser of every btrfsctl command (help, usage errors, man pages)."""
    from .commands import build_parser as full

    return full()


def main(argv: list[str] | None = None) -> int:
    """Entry point of btrfsctl; returns the exit code (docs/cli.md lists them)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        from . import lean

        code = lean.run(args)
        if code is not None:
            return code
        from .commands import run
    except KeyboardInterrupt:  # Ctrl-C while the full path is still being imported
        return 130
    return run(args)
