"""btrfsd-notify: wiring and command line (docs/front-ends.md).

Signals arrive on the system bus; each quota alert waits ``settle`` seconds so the levels
one watcher pass reports together (warning, critical, exceeded) become one notification
for the highest, then mine.py decides whose it is and throttle.py whether to show it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import replace
from typing import Any

from dbus_fast import BusType, Message
from dbus_fast.aio import MessageBus
from dbus_fast.constants import NameFlag, RequestNameReply
from dbus_fast.errors import DBusError

from ..constants import JOB_IFACE
from . import actions
from .desktop import Desktop
from .messages import Note, job_note, quota_note
from .mine import job_is_mine, quota_subject, read_mountinfo
from .sysbus import Btrfsd
from .throttle import Throttle, level_rank

log = logging.getLogger("btrfsd-notify")

# One agent per session: the systemd unit and the XDG autostart entry may both start one.
SESSION_NAME = "org.btrfsd1.Notify"
UNIT = "btrfsd-notify.service"


class Agent:
    """Turns btrfsd's signals into notifications for one user."""

    def __init__(self, btrfsd: Btrfsd, desktop: Desktop, throttle: Throttle, *,
                 uid: int, settle: float = 0.5, open_command: str = actions.DEFAULT_COMMAND,
                 mountinfo: Callable[[], str] = read_mountinfo) -> None:
        self.btrfsd = btrfsd
        self.desktop = desktop
        self.throttle = throttle
        self.uid = uid
        self.settle = settle
        self.open_command = open_command
        self.mountinfo = mountinfo
        self._pending: dict[tuple[str, int], list[Any]] = {}
        self._ids: dict[Hashable, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def idle(self) -> None:
        """Wait until every alert received so far has been handled (for tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- signals in ----------------------------------------------------------------------
    def on_signal(self, msg: Message) -> None:
        """A QuotaWarning or Job.Completed from btrfsd."""
        if msg.member == "QuotaWarning":
            _path, qgroupid, _used, _limit, level = msg.body
            key = (msg.path or "", int(qgroupid))
            if self.throttle.repeat(key, level_rank(level)):
                # shown already: not even a read for it
                log.debug("%s for qgroup %d of %s repeats one shown", level, qgroupid, key[0])
                return
            held = self._pending.get(key)
            if held is None:
                self._pending[key] = list(msg.body)
                self._spawn(self._quota(key))
            elif level_rank(level) >= level_rank(held[4]):
                self._pending[key] = list(msg.body)
        elif msg.member == "Completed":
            self._spawn(self._job(msg.path or ""))

    async def _quota(self, key: tuple[str, int]) -> None:
        await asyncio.sleep(self.settle)
        _path, qgroupid, used, limit, level = self._pending.pop(key)
        fs_path = key[0]
        try:
            rows = await self.btrfsd.quota_rows(fs_path)
            mounts = await self.btrfsd.mount_points(fs_path)
            admin = await self.btrfsd.sees_everything()
        except DBusError as e:
            log.warning("cannot check quota alert %s of %s: %s", level, fs_path, e.text)
            return
        subject = quota_subject(qgroupid, rows, mounts, admin, self.uid, self.mountinfo())
        if subject is None:
            log.debug("%s for qgroup %d of %s is not this user's", level, qgroupid, fs_path)
            return
        if self.throttle.admit(key, level_rank(level)):
            await self._show(quota_note(subject.where, subject.mount, used, limit, level), key)

    async def _job(self, path: str) -> None:
        try:
            props = await self.btrfsd.properties(path, JOB_IFACE)
            started = int(props.get("StartedByUid", -1))
            admin = started != self.uid and await self.btrfsd.sees_everything()
            if not job_is_mine(started, admin, self.uid):
                return
            mounts = await self.btrfsd.mount_points(str(props.get("Filesystem", "")))
        except DBusError as e:
            log.warning("cannot read finished job %s: %s", path, e.text)
            return
        note = job_note(props, mounts[0] if mounts else "", path)
        if note is not None and self.throttle.admit(("job", path)):
            await self._show(note, ("job", path))

    # -- notifications out ---------------------------------------------------------------
    async def _show(self, note: Note, key: Hashable) -> None:
        if dropped := self.throttle.take_dropped():
            note = replace(note, body=f"{note.body} ({dropped} more btrfs alerts were not "
                                      "shown: too many at once.)")
        try:
            self._ids[key] = await self.desktop.show(note, self._ids.get(key, 0))
        except DBusError as e:
            log.warning("the notification server refused %r: %s", note.summary, e.text)

    def on_action(self, note: Note) -> None:
        """The user clicked a notification: open its detail."""
        try:
            argv = actions.expand(self.open_command, note)
        except ValueError as e:
            log.warning("--open-command cannot be split: %s", e)
            return
        log.info("opening detail: %s", argv)
        self._spawn(actions.run(argv))


def build_parser() -> argparse.ArgumentParser:
    """The command line (also the man page's source, scripts/gendocs.py)."""
    p = argparse.ArgumentParser(prog="btrfsd-notify", description=(
        "Desktop notifications for btrfsd: quota alerts for your subvolumes (all of them "
        "for admins), scrubs that found errors, failed jobs."))
    p.add_argument("--open-command", default=actions.DEFAULT_COMMAND, metavar="CMD",
                   help="what a click on a notification runs; placeholders {detail} (the "
                        "btrfsctl command), {kind}, {mount}, {target} (default: %(default)s)")
    p.add_argument("--quiet-time", type=float, default=3600.0, metavar="S",
                   help="no repeat of an alert for the same subject and level within S "
                        "seconds (default %(default)s)")
    p.add_argument("--burst", type=int, default=5, metavar="N",
                   help="notifications shown at once before the rate limit applies "
                        "(default %(default)s)")
    p.add_argument("--per", type=float, default=30.0, metavar="S",
                   help="then one notification per S seconds (default %(default)s)")
    p.add_argument("--settle", type=float, default=0.5, metavar="S",
                   help="wait S seconds to merge the levels of one quota alert "
                        "(default %(default)s)")
    p.add_argument("--autostart", action="store_true",
                   help="started by the XDG autostart entry: step aside when the user runs "
                        f"the systemd user unit {UNIT} instead")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    return p


def systemd_unit_enabled() -> bool:
    """Whether the user enabled btrfsd-notify.service (then it, not autostart, runs us)."""
    if shutil.which("systemctl") is None:
        return False
    r = subprocess.run(["systemctl", "--user", "--quiet", "is-enabled", UNIT],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return r.returncode == 0


async def run(args: argparse.Namespace) -> int:
    """Connect both buses and serve until one goes away: 0 when the session ends (or on
    SIGTERM), 1 when the system bus is lost (systemd restarts the unit then)."""
    system = await MessageBus(bus_type=BusType.SYSTEM).connect()
    session = await MessageBus(bus_type=BusType.SESSION).connect()
    if await session.request_name(SESSION_NAME, NameFlag.DO_NOT_QUEUE) \
            != RequestNameReply.PRIMARY_OWNER:
        log.info("another btrfsd-notify runs in this session; leaving it to that one")
        return 0
    btrfsd = Btrfsd(system, clock=time.monotonic)
    agent: Agent

    def on_action(note: Note) -> None:
        agent.on_action(note)

    desktop = Desktop(session, on_action)
    throttle = Throttle(time.monotonic, quiet=args.quiet_time, burst=args.burst, per=args.per)
    agent = Agent(btrfsd, desktop, throttle, uid=os.getuid(), settle=args.settle,
                  open_command=args.open_command)
    try:
        await desktop.start()
    except DBusError as e:
        log.error("no notification server on the session bus: %s", e.text)
        return 1
    await btrfsd.subscribe(agent.on_signal)
    log.info("watching btrfsd for uid %d", os.getuid())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    lost_system = asyncio.ensure_future(system.wait_for_disconnect())  # type: ignore[no-untyped-call]
    lost_session = asyncio.ensure_future(session.wait_for_disconnect())  # type: ignore[no-untyped-call]
    waits = [lost_system, lost_session,
             asyncio.ensure_future(stop.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()
    code = 1 if lost_system.done() and not lost_system.cancelled() else 0
    if code:
        log.error("lost the system bus")
    system.disconnect()
    session.disconnect()
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="btrfsd-notify: %(message)s",
                        stream=sys.stderr)
    if args.autostart and systemd_unit_enabled():
        log.info("%s is enabled: it runs the agent, not autostart", UNIT)
        return 0
    try:
        return asyncio.run(run(args))
    except OSError as e:  # a bus that cannot be reached
        log.error("cannot connect: %s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
