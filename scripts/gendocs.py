"""Write the man pages btrfsd(8), btrfsctl(8), btrfsd-notify(1), btrfsd-fleet(8) and
btrfsctl's bash completion from the programs' own argparse parsers, so they cannot drift
from the code.

Run at package build time (debian/rules) with the package's venv Python and the pinned
tools of debian/build-requirements.txt (argparse-manpage, shtab) on PYTHONPATH:

    python scripts/gendocs.py OUTDIR

writes OUTDIR/btrfsd.8, OUTDIR/btrfsctl.8, OUTDIR/btrfsd-notify.1, OUTDIR/btrfsd-fleet.8 and
OUTDIR/btrfsctl.bash-completion. The extra sections (FILES, EXIT STATUS, SEE ALSO) come
from docs/man/<prog>.include.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import shtab
from argparse_manpage.manpage import Manpage

from btrfsd.cli.main import build_parser as ctl_parser
from btrfsd.constants import VERSION
from btrfsd.daemon import build_parser as daemon_parser
from btrfsd.fleet.main import build_parser as fleet_parser
from btrfsd.notify.agent import build_parser as notify_parser

REPO = Path(__file__).resolve().parents[1]
INCLUDES = REPO / "docs" / "man"
# btrfsctl's positional arguments that name a place in a filesystem (subvolumes, mount
# points, snapshot targets: all directories); the rest (schedule names, on/off, sizes)
# get no file-name completion.
DIRECTORY_ARGS = {"path", "subvolume", "source", "dest"}
# name: (parser factory, one-line description, man section)
PROGRAMS: dict[str, tuple[Callable[[], argparse.ArgumentParser], str, str]] = {
    "btrfsd": (daemon_parser, "Btrfs management service on the system D-Bus", "8"),
    "btrfsctl": (ctl_parser, "manage Btrfs through the btrfsd service", "8"),
    "btrfsd-notify": (notify_parser, "desktop notifications for btrfsd's alerts", "1"),
    "btrfsd-fleet": (fleet_parser, "btrfsd over NATS for a fleet of machines", "8"),
}


def manpage(prog: str) -> str:
    """The roff text of ``prog``'s man page. Raises OSError if its include file cannot be
    read."""
    factory, description, section = PROGRAMS[prog]
    data = {
        "project_name": "btrfsd",
        "version": VERSION,
        "manual_section": section,
        "manual_title": "System Administration" if section == "8" else "User Commands",
        "description": description,
        "include": str(INCLUDES / f"{prog}.include"),
    }
    # _data is how argparse-manpage's own command line passes these (its API has no
    # other way to name the include file); pinned in debian/build-requirements.txt.
    return str(Manpage(factory(), _data=data))


def _positionals(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    """Every positional argument of ``parser`` and of its subcommands, recursively."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _positionals(sub)
        elif not action.option_strings:
            yield action


def bash_completion() -> str:
    """btrfsctl's bash completion script: commands, options, choices, and directory
    names where a command takes a path. Raises nothing."""
    parser = ctl_parser()
    for action in _positionals(parser):
        if action.dest in DIRECTORY_ARGS and not action.choices:
            action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
    return str(shtab.complete(parser, shell="bash"))


def main(argv: list[str]) -> int:
    """Write the files into the directory ``argv[0]``; returns the exit code. Raises
    OSError if a file cannot be written."""
    if len(argv) != 1:
        print("usage: gendocs.py OUTDIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    # argparse wraps usage lines to the terminal's width; in a man page man fills them
    # to the reader's, and pre-wrapped ones make groff warn ("cannot adjust line")
    os.environ["COLUMNS"] = "1000"
    for prog, (_factory, _description, section) in PROGRAMS.items():
        (out / f"{prog}.{section}").write_text(manpage(prog))
    (out / "btrfsctl.bash-completion").write_text(bash_completion())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
