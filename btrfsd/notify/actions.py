"""The notification's "open detail" action: a command line the user can change.

The template is split like a shell line (shlex), never run by a shell: each placeholder
is replaced inside one argument, so a path with spaces or quotes stays one argument.
``{detail}`` standing alone expands to several arguments: the btrfsctl command that
shows the detail (``btrfsctl quota show MOUNT``, ``btrfsctl scrub status MOUNT``,
``btrfsctl jobs``). ``{kind}`` is quota or job, ``{mount}`` the mount point, ``{target}``
the mount point (quota) or the job's object path.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
from collections.abc import Sequence

from .messages import Note

log = logging.getLogger("btrfsd-notify")

# A terminal that shows the btrfsctl output and stays open until Enter; on Debian
# x-terminal-emulator is the desktop's terminal (alternatives). Cockpit users:
#   --open-command 'xdg-open http://localhost:9090/btrfsd'
DEFAULT_COMMAND = ("x-terminal-emulator -e sh -c '\"$@\"; echo; echo \"(Enter closes)\"; "
                   "read -r _' sh {detail}")


def detail_argv(note: Note) -> list[str]:
    """The btrfsctl command that shows what ``note`` is about."""
    if note.kind == "quota":
        return ["btrfsctl", "quota", "show", note.mount]
    if note.summary.startswith("Scrub") and note.mount:
        return ["btrfsctl", "scrub", "status", note.mount]
    return ["btrfsctl", "jobs"]


def expand(template: str, note: Note) -> list[str]:
    """The argv for ``note``. Raises ValueError for a template shlex cannot split."""
    values = {"{kind}": note.kind, "{mount}": note.mount, "{target}": note.target}
    argv: list[str] = []
    for word in shlex.split(template):
        if word == "{detail}":
            argv += detail_argv(note)
            continue
        for key, value in values.items():
            word = word.replace(key, value)
        argv.append(word)
    return argv


async def run(argv: Sequence[str]) -> None:
    """Start ``argv`` detached from the agent (its own session, no stdin); log, never
    raise, when it cannot start or fails."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
    except OSError as e:
        log.warning("cannot run %s: %s", shlex.join(argv), e)
        return
    code = await proc.wait()
    if code:
        log.warning("%s exited with %d", shlex.join(argv), code)
