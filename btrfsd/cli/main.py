"""btrfsctl: command-line client of btrfsd (docs/cli.md).

Start-up is most of a short command's time, so this module imports nothing heavy: the
commonest commands (lean.py) run on the standard library alone, everything else through
the full path (commands.py: argparse, asyncio, dbus-fast, rich), imported only then. The
launcher (bin/btrfsctl) ends a lean command without the interpreter's shutdown
(exit_now). docs/benchmarks.md, "btrfsctl, third step", says what each part costs.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing costs ~5 ms at start-up; mypy still reads the block below
if TYPE_CHECKING:
    import argparse
    from typing import NoReturn


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


def exit_now(code: int) -> NoReturn:
    """End btrfsctl's process with ``code`` (the launcher's last step; never returns).

    After a lean command, once its output is flushed, with ``os._exit``: the
    interpreter's own shutdown (freeing every object and module) took 2-5 ms, a tenth of
    such a command, with nothing left for it to do. Otherwise, or when flushing fails
    (a closed pipe: the interpreter then says so as it always did), as ``sys.exit``
    does: after the full path (asyncio, threads, rich) or with exit handlers registered.
    Raises SystemExit then.
    """
    import atexit

    if ("btrfsd.cli.commands" not in sys.modules and "threading" not in sys.modules
            and not getattr(atexit, "_ncallbacks", lambda: 1)()):
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # a closed pipe: the ordinary exit reports it, as always
            sys.exit(code)
        os._exit(code)
    sys.exit(code)
