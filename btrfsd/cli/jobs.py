"""btrfsctl scrub / balance / jobs: start, control and watch Job objects."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from dbus_fast import Message, Variant
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from ..constants import JOB_IFACE, JOBS_PATH
from ..units import format_bytes
from . import argtypes, output
from .client import CallError, Client, absolute
from .errors import EXIT_FAILED, EXIT_OK, EXPLANATIONS
from .output import Outcome

ACTIVE = ("running", "paused")
EXIT_CANCELLED = EXPLANATIONS["org.btrfsd1.Error.Cancelled"].exit_code
EXIT_UNSUCCESSFUL = 15  # the job ran to its end but reports a problem (scrub errors)


def job_exit_code(state: str, success: bool) -> int:
    """Exit code of ``--wait`` for a job that ended in ``state``."""
    if state == "completed":
        return EXIT_OK if success else EXIT_UNSUCCESSFUL
    if state == "cancelled":
        return EXIT_CANCELLED
    return EXIT_FAILED


class JobWatcher:
    """Follows every job's PropertiesChanged and Completed signals on the bus."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.props: dict[str, dict[str, Any]] = {}
        self.completed: dict[str, tuple[bool, str]] = {}
        self.changed = asyncio.Event()

    async def start(self) -> None:
        """Subscribe before starting or reading a job, so no signal is missed."""
        await self.client.subscribe(
            f"type='signal',sender='org.btrfsd1',path_namespace='{JOBS_PATH}'", self._on_signal)

    def _on_signal(self, msg: Message) -> None:
        path = msg.path or ""
        if msg.member == "PropertiesChanged" and msg.body and msg.body[0] == JOB_IFACE:
            self.props.setdefault(path, {}).update(Client.plain(msg.body[1]))
        elif msg.member == "Completed" and msg.interface == JOB_IFACE:
            self.completed[path] = (bool(msg.body[0]), str(msg.body[1]))
        else:
            return
        self.changed.set()

    async def news(self, timeout: float) -> None:
        """Wait until a signal arrives or ``timeout`` seconds pass."""
        self.changed.clear()
        # asyncio.timeout, not wait_for: Python 3.11's wait_for drops a cancellation
        # (Ctrl-C) that arrives as the event is set, and the watch went on to the job's end
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.changed.wait()

    async def current(self, path: str) -> dict[str, Any]:
        props = await self.client.properties(path, JOB_IFACE)
        props.update(self.props.get(path, {}))
        self.props[path] = props
        return props


def _eta(props: dict[str, Any]) -> str:
    end = props.get("ExpectedEndTime", 0)
    if not end or props.get("State") != "running":
        return "-"
    left = max(0, int(end / 1e6 - time.time()))
    return f"{left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}"


def _line(props: dict[str, Any]) -> str:
    parts = [props.get("State", "?")]
    if props.get("BytesTotal"):
        parts.append(f"{format_bytes(props['BytesDone'])} / {format_bytes(props['BytesTotal'])}")
    details = props.get("Details", {})
    if "chunks_expected" in details:
        parts.append(f"{details['chunks_completed']}/{details['chunks_expected']} chunks")
    if props.get("Rate"):
        parts.append(f"{format_bytes(props['Rate'])}/s")
    parts.append(f"ETA {_eta(props)}")
    return "  ".join(parts)


@contextlib.contextmanager
def watching() -> Iterator[None]:
    """Around code that only watches jobs: on Ctrl-C, say that the jobs go on.

    asyncio.run turns the first Ctrl-C into a cancellation of the main task, so the
    interruption arrives here as CancelledError (re-raised; main() still exits 130).
    """
    try:
        yield
    except asyncio.CancelledError:
        output.err_console.print("\nStopped watching; the job keeps running "
                                 "(cancel it with btrfsctl scrub|balance cancel PATH).")
        raise


async def wait_for(watcher: JobWatcher, path: str, as_json: bool) -> Outcome:
    """Show a progress bar (unless ``as_json``) until the job ends; return the job's
    properties with the exit code for its result. Raises CallError."""
    with watching():
        props = await _follow(watcher, path, show=not as_json)
    success, message = watcher.completed.get(path, (props["Success"], props["Message"]))
    if not as_json:
        output.console.print(message or props["State"], markup=False, highlight=False)
    return Outcome(_job_json(path, props), job_exit_code(props["State"], success))


async def _follow(watcher: JobWatcher, path: str, show: bool) -> dict[str, Any]:
    """Draw the progress bar until the job ends; return its final properties."""
    props = await watcher.current(path)
    label = f"{props['Operation']} {path.rsplit('/', 1)[-1]}"
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
                  TextColumn("{task.fields[line]}"), console=output.err_console,
                  disable=not show, transient=False) as bar:
        task = bar.add_task(label, total=1.0, line="")
        while path not in watcher.completed and props.get("State") in ACTIVE:
            bar.update(task, completed=props.get("Progress", 0.0), line=_line(props))
            await watcher.news(timeout=1.0)  # refresh the ETA even without news
            props = {**props, **watcher.props.get(path, {})}
        props = await watcher.current(path)
        bar.update(task, completed=props.get("Progress", 0.0), line=_line(props))
    return props


def _job_json(path: str, props: dict[str, Any]) -> dict[str, Any]:
    return {"object_path": path, **props}


async def all_jobs(c: Client) -> list[dict[str, Any]]:
    (paths,) = await c.manager("GetJobs", "a{sv}", {})
    jobs = []
    for p in paths:
        try:
            jobs.append(_job_json(p, await c.properties(p, JOB_IFACE)))
        except CallError:
            continue  # removed meanwhile
    return jobs


async def _active_job(c: Client, fs: str, operation: str) -> dict[str, Any]:
    for job in await all_jobs(c):
        if job["Filesystem"] == fs and job["Operation"] == operation and job["State"] in ACTIVE:
            return job
    raise CallError("org.btrfsd1.Error.NotFound", f"no {operation} is running on that filesystem")


def _print_jobs(jobs: list[dict[str, Any]]) -> None:
    output.table(None, ["Job", "Operation", "Filesystem", "State", "Progress", "Details",
                        "Started", "By uid"], [
        [j["object_path"].rsplit("/", 1)[-1], j["Operation"],
         j["Filesystem"].rsplit("/", 1)[-1].replace("_", "-"), j["State"],
         f"{j['Progress'] * 100:.1f}%", _line(j) if j["State"] in ACTIVE else j["Message"],
         output.fmt_time(j["StartTime"]),
         "outside btrfsd" if j["StartedByUid"] == 2**32 - 1 else str(j["StartedByUid"])]
        for j in jobs
    ])


# -- handlers ---------------------------------------------------------------------------
async def start_job(c: Client, a: argparse.Namespace, member: str,
                 options: dict[str, Variant]) -> Any:
    """Call ``member`` (a Start... method returning a job) on the filesystem of a.path;
    with a.wait follow the job to its end (the Outcome's exit code from its result).
    Raises CallError."""
    fs = await c.filesystem_of(absolute(a.path))
    return await run_job(c, lambda: c.filesystem(fs, member, "a{sv}", options),
                         wait=a.wait, as_json=a.json)


async def run_job(c: Client, start: Callable[[], Awaitable[list[Any]]], *, wait: bool,
                  as_json: bool) -> Any:
    """Call ``start`` (a method call whose reply is a job's path); with ``wait`` follow
    the job to its end (the Outcome's exit code from its result), else say where it
    is. Raises CallError."""
    watcher = JobWatcher(c)
    if wait:
        await watcher.start()  # before the start: no signal of the job is missed
    (job,) = await start()
    if wait:
        return await wait_for(watcher, job, as_json)
    if not as_json:
        output.console.print(f"Started {job} (follow it: btrfsctl jobs --follow)")
    return {"object_path": job}


async def scrub_start(c: Client, a: argparse.Namespace) -> Any:
    opts = {"readonly": Variant("b", a.readonly)}
    if a.limit:
        opts["limit"] = Variant("t", a.limit)
    return await start_job(c, a, "StartScrub", opts)


async def balance_start(c: Client, a: argparse.Namespace) -> Any:
    opts: dict[str, Variant] = {}
    if a.data_usage is not None:
        opts["data_usage"] = Variant("u", a.data_usage)
    if a.metadata_usage is not None:
        opts["metadata_usage"] = Variant("u", a.metadata_usage)
    if a.limit is not None:
        opts["limit"] = Variant("u", a.limit)
    if a.full:
        opts["full"] = Variant("b", True)
    return await start_job(c, a, "StartBalance", opts)


async def _status(c: Client, a: argparse.Namespace, operation: str) -> Any:
    fs = await c.filesystem_of(absolute(a.path))
    running = [j for j in await all_jobs(c) if j["Filesystem"] == fs
               and j["Operation"] == operation and j["State"] in ACTIVE]
    (last,) = await c.filesystem(fs, "GetLastResults", "a{sv}", {})
    last_op = Client.plain(last).get(operation)
    if not a.json:
        if running:
            output.console.print(f"Running: {running[0]['object_path']}  {_line(running[0])}")
        else:
            output.console.print(f"No {operation} is running.")
        if last_op:
            output.console.print(
                f"Last {operation}: job {last_op['job_id']}, {last_op['state']}, started "
                f"{output.fmt_time(last_op['start_time'])}, ended "
                f"{output.fmt_time(last_op['end_time'])}: {last_op['message']}",
                markup=False, highlight=False)
        else:
            output.console.print(f"btrfsd has no record of an earlier {operation}.")
    return {"running": running, "last": last_op}


async def scrub_status(c: Client, a: argparse.Namespace) -> Any:
    return await _status(c, a, "scrub")


async def balance_status(c: Client, a: argparse.Namespace) -> Any:
    return await _status(c, a, "balance")


async def _control(c: Client, a: argparse.Namespace, operation: str, member: str) -> Any:
    job = await _active_job(c, await c.filesystem_of(absolute(a.path)), operation)
    await c.call(job["object_path"], JOB_IFACE, member, "a{sv}", [{}])
    if not a.json:
        verb = {"Cancel": "Cancel requested for", "Pause": "Paused", "Resume": "Resumed"}[member]
        output.console.print(f"{verb} {job['object_path']}")
    return {"object_path": job["object_path"], "action": member.lower()}


async def scrub_cancel(c: Client, a: argparse.Namespace) -> Any:
    return await _control(c, a, "scrub", "Cancel")


async def balance_pause(c: Client, a: argparse.Namespace) -> Any:
    return await _control(c, a, "balance", "Pause")


async def balance_resume(c: Client, a: argparse.Namespace) -> Any:
    return await _control(c, a, "balance", "Resume")


async def balance_cancel(c: Client, a: argparse.Namespace) -> Any:
    return await _control(c, a, "balance", "Cancel")


async def jobs_list(c: Client, a: argparse.Namespace) -> Any:
    if not a.follow:
        jobs = await all_jobs(c)
        if not a.json:
            _print_jobs(jobs) if jobs else output.console.print("No jobs.")
        return jobs
    watcher = JobWatcher(c)
    await watcher.start()
    with watching():
        await _follow_all(c, watcher, a.json)


async def _follow_all(c: Client, watcher: JobWatcher, as_json: bool) -> None:
    """Redraw the job table (or print one JSON array) on every change, until Ctrl-C."""
    while True:
        jobs = await all_jobs(c)
        if as_json:
            output.emit_json(jobs)
        else:
            output.console.clear()
            _print_jobs(jobs) if jobs else output.console.print("No jobs.")
            output.console.print("[dim]Following; Ctrl-C stops watching (jobs keep running).")
        await watcher.news(timeout=2.0)


def add_commands(sub: Any, cmd: Any) -> None:
    """Register scrub, balance and jobs with the top-level parser."""
    sc = sub.add_parser("scrub", help="verify checksums of all data and metadata"
                        ).add_subparsers(dest="cmd", required=True)
    s = cmd(sc, "start", scrub_start, "start a scrub of the filesystem holding PATH")
    s.add_argument("path")
    s.add_argument("--wait", action="store_true", help="show progress until it ends")
    s.add_argument("--readonly", action="store_true", help="report errors, repair nothing")
    s.add_argument("--limit", type=argtypes.speed, metavar="SPEED",
                   help="I/O limit per device, e.g. 100M/s (put back afterwards)")
    cmd(sc, "status", scrub_status, "running scrub and the last result").add_argument("path")
    cmd(sc, "cancel", scrub_cancel, "cancel the running scrub").add_argument("path")

    bc = sub.add_parser("balance", help="rewrite chunks to reclaim or rebalance space"
                        ).add_subparsers(dest="cmd", required=True)
    b = cmd(bc, "start", balance_start, "balance chunks matching the filters")
    b.add_argument("path")
    b.add_argument("--data-usage", type=argtypes.percent, metavar="N",
                   help="data chunks at most N%% full")
    b.add_argument("--metadata-usage", type=argtypes.percent, metavar="N",
                   help="metadata chunks at most N%% full")
    b.add_argument("--limit", type=argtypes.count, metavar="N",
                   help="at most N chunks of each type")
    b.add_argument("--full", action="store_true", help="every chunk (slow; no filters)")
    b.add_argument("--wait", action="store_true", help="show progress until it ends")
    for name, handler, text in (("status", balance_status, "running balance and last result"),
                                ("pause", balance_pause, "pause the running balance"),
                                ("resume", balance_resume, "resume the paused balance"),
                                ("cancel", balance_cancel, "cancel the balance")):
        cmd(bc, name, handler, text).add_argument("path")

    j = cmd(sub, "jobs", jobs_list, "list scrub and balance jobs")
    j.add_argument("--follow", action="store_true", help="keep showing them, live")

