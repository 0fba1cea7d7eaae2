"""btrfsctl's fleet side (docs/fleet.md): ``--host NAME`` runs a command on one host over
NATS, ``--hosts PATTERN`` on every matching host at once with a report per host, and
``fleet list|status`` reads the hosts' last status from the JetStream bucket.

NATS settings: ``[nats]`` of $BTRFSD_FLEET_CONFIG or ~/.config/btrfsd/fleet.toml, then
``--nats URL[,URL]`` and ``--creds FILE``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import fnmatch
import time
from typing import TYPE_CHECKING, Any

from . import output, plain
from .callerror import CallError
from .client import Client
from .errors import error_json, error_line, explain
from .output import Outcome

if TYPE_CHECKING:
    from ..fleet.connect import Requester
    from ..fleet.settings import NatsSettings
    from ..fleet.status import HostStatus

# Imported only when a fleet option or command is used: nats-py and the settings'
# pydantic models would add to every btrfsctl start.
FLEET_ERROR = "org.btrfsd1.Fleet.Error."
BAD_CONFIG = FLEET_ERROR + "BadConfig"
# global options that take a value (commands._rewrite skips the value)
VALUED_OPTIONS = ("--host", "--hosts", "--nats", "--creds")


def add_options(p: argparse.ArgumentParser) -> None:
    """The global fleet options of btrfsctl's parser."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--host", metavar="NAME", help="run the command on fleet host NAME over "
                   "NATS (docs/fleet.md)")
    g.add_argument("--hosts", metavar="PATTERN", help="run the command on every fleet host "
                   "whose name matches PATTERN (shell-style, e.g. 'db-*'), at once")
    p.add_argument("--nats", metavar="URL", help="NATS server(s), comma-separated "
                   "(default: the client config's [nats] servers)")
    p.add_argument("--creds", metavar="FILE", help="NATS credentials file (.creds)")


def add_commands(sub: Any, cmd: Any) -> None:
    f = sub.add_parser("fleet", help="hosts served by btrfsd-fleet over NATS"
                       ).add_subparsers(dest="cmd", required=True)
    cmd(f, "list", fleet_list, "fleet hosts and whether they answer")
    cmd(f, "status", fleet_status, "each host's filesystems, space, last scrub, quota "
        "warnings (also for hosts that are down)")


def _settings(args: argparse.Namespace) -> NatsSettings:
    from ..fleet.settings import SettingsError, load_client

    try:
        return load_client(getattr(args, "nats", None), getattr(args, "creds", None))
    except SettingsError as e:
        raise CallError(BAD_CONFIG, str(e)) from None


def client_for(args: argparse.Namespace) -> Client:
    """The client a command runs with: the local bus, or ``--host``'s bridge. Raises
    CallError (bad fleet settings or host name)."""
    if getattr(args, "host", None):
        from .remote import RemoteClient

        return RemoteClient(args.host, _settings(args))
    return Client(interactive=False if args.no_ask else None)


def wants_fleet(args: argparse.Namespace) -> bool:
    """Whether the command runs through run() here rather than on one client."""
    return bool(getattr(args, "hosts", None)) or getattr(args, "group", "") == "fleet"


async def _statuses(req: Requester, bucket: str) -> list[HostStatus]:
    from nats.errors import Error as NatsError

    from ..fleet import protocol
    from ..fleet.status import read_all

    assert req.nc is not None
    try:
        return await read_all(req.nc, bucket)
    except (NatsError, TimeoutError) as e:
        raise CallError(protocol.NOT_PERMITTED if "ermission" in str(e) else protocol.TIMEOUT,
                        f"cannot read the fleet status bucket {bucket}: "
                        f"{e or type(e).__name__}") from None


async def fleet_list(req: Requester, a: argparse.Namespace) -> Any:
    now = time.time()
    hosts = await _statuses(req, _bucket())
    data: list[dict[str, Any]] = [
        {"host": h.host, "reachable": h.reachable(now), "summary": h.summary(now)}
        for h in hosts]
    if not a.json:
        output.table(None, ["HOST", "STATE"], [[d["host"], d["summary"]] for d in data])
    return data


def _bucket() -> str:
    from ..fleet.settings import DEFAULT_BUCKET

    return DEFAULT_BUCKET


def _scrub_cell(fs: dict[str, Any]) -> str:
    last = fs.get("last_scrub")
    if not last:
        return "never"
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(last.get("end_time", 0) / 1e6)) \
        if last.get("end_time") else "-"
    errors = last.get("errors", 0)
    return f"{last.get('state', '?')} {when}" + (f", {errors} errors" if errors else "")


async def fleet_status(req: Requester, a: argparse.Namespace) -> Any:
    now = time.time()
    hosts = await _statuses(req, _bucket())
    data = [h.as_dict(now) for h in hosts]
    if not a.json:
        rows = []
        for h in data:
            if not h["filesystems"]:
                rows.append([h["host"], h["summary"], "-", "-", "-", "-"])
            for fs in h["filesystems"]:
                mount = (fs.get("mount_points") or ["-"])[0]
                used = (f"{output.fmt_bytes(fs['used_bytes'])} / "
                        f"{output.fmt_bytes(fs['total_bytes'])}")
                warnings = sum(1 for w in h["quota_warnings"] if w["filesystem"] == fs["object"])
                rows.append([h["host"], h["summary"], mount, used, _scrub_cell(fs),
                             str(warnings) if warnings else "-"])
        output.table(None, ["HOST", "STATE", "MOUNTED", "USED", "LAST SCRUB", "QUOTA ALERTS"],
                     rows)
    return data


async def _on_hosts(req: Requester, args: argparse.Namespace) -> Outcome:
    from ..fleet import protocol
    from .remote import RemoteClient

    names = [h.host for h in await _statuses(req, _bucket())]
    hosts = sorted(n for n in names if fnmatch.fnmatchcase(n, args.hosts))
    if not hosts:
        raise CallError(protocol.NO_RESPONDERS, f"no fleet host matches {args.hosts!r} "
                        "(btrfsctl fleet list shows the known ones)")
    quiet = copy.copy(args)
    quiet.json = True  # handlers print nothing then; the per-host report is printed here

    async def one(host: str) -> dict[str, Any]:
        try:
            data = await args.handler(RemoteClient.sharing(host, req), quiet)
        except CallError as e:
            return {"host": host, "ok": False, **error_json(e),
                    "exit_code": explain(e.name).exit_code, "line": error_line(e)}
        if isinstance(data, Outcome):
            return {"host": host, "ok": data.exit_code == 0, "result": data.data,
                    "exit_code": data.exit_code}
        return {"host": host, "ok": True, "result": data, "exit_code": 0}

    results = await asyncio.gather(*(one(h) for h in hosts))
    if not args.json:
        rows = [[r["host"], "ok" if r["ok"] else "failed",
                 _short(r["result"]) if "result" in r else r["line"].removeprefix("btrfsctl: ")]
                for r in results]
        output.table(None, ["HOST", "RESULT", "DETAIL"], rows)
    failed = [r["exit_code"] for r in results if r["exit_code"]]
    for r in results:
        r.pop("line", None)
    return Outcome(list(results), failed[0] if failed else 0)


def _short(data: Any) -> str:
    if isinstance(data, str):
        return data
    if isinstance(data, dict) and isinstance(data.get("path"), str):
        return str(data["path"])  # what a snapshot or subvolume command made
    text = str(plain.dumps(data))
    return text if len(text) <= 120 else text[:117] + "..."


async def run(args: argparse.Namespace) -> int:
    """``fleet list|status`` or a command with ``--hosts``; the exit code (the first
    failing host's, for ``--hosts``)."""
    from ..fleet.connect import FleetCallError, Requester

    try:
        req = Requester(_settings(args))
        try:
            await req.connect()
        except FleetCallError as e:
            raise CallError(e.name, e.message) from None
        try:
            if args.group == "fleet":
                data = await args.handler(req, args)
            else:
                data = await _on_hosts(req, args)
        finally:
            await req.close()
    except CallError as e:
        return output.finish(e, args.json)
    return output.finish(data, args.json)
