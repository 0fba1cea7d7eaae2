"""D-Bus error names -> a plain sentence and a distinct exit code; the daemon's structured
hints -> btrfsctl's own advice (see docs/cli.md)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..constants import ERROR_PREFIX
from .callerror import CallError


@dataclass(frozen=True)
class Explained:
    sentence: str
    exit_code: int


EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_DAEMON = 14

EXPLANATIONS: dict[str, Explained] = {
    ERROR_PREFIX + "NotFound": Explained("Not found", 3),
    ERROR_PREFIX + "AlreadyExists": Explained("Already exists", 4),
    ERROR_PREFIX + "InvalidArgument": Explained("Invalid argument", 5),
    ERROR_PREFIX + "NotBtrfs": Explained("Not on a btrfs filesystem", 6),
    ERROR_PREFIX + "Busy": Explained("Busy", 7),
    ERROR_PREFIX + "NoSpace": Explained("No space left on the filesystem", 8),
    ERROR_PREFIX + "QuotaExceeded": Explained("Quota exceeded", 9),
    ERROR_PREFIX + "AlreadyRunning": Explained("Already running", 10),
    ERROR_PREFIX + "Cancelled": Explained("Cancelled", 11),
    ERROR_PREFIX + "Failed": Explained("Failed", EXIT_FAILED),
    "org.freedesktop.DBus.Error.AccessDenied": Explained(
        "Permission denied (PolicyKit said no; ask an administrator, or see "
        "polkit-actions/50-btrfsd-admin.rules.example)", 12),
    "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired": Explained(
        "Authentication required (run from a terminal with a PolicyKit agent, "
        "e.g. under pkttyagent, or as root)", 13),
    "org.freedesktop.DBus.Error.ServiceUnknown": Explained(
        "btrfsd is not running (start it: systemctl start btrfsd)", EXIT_NO_DAEMON),
    "org.freedesktop.DBus.Error.NameHasNoOwner": Explained(
        "btrfsd is not running (start it: systemctl start btrfsd)", EXIT_NO_DAEMON),
    "org.freedesktop.DBus.Error.NoServer": Explained(
        "Cannot reach the system bus (is dbus running? DBUS_SYSTEM_BUS_ADDRESS?)", EXIT_NO_DAEMON),
    "org.freedesktop.DBus.Error.NoReply": Explained(
        "btrfsd did not answer in time; see its log (journalctl -u btrfsd)", EXIT_FAILED),
    "org.freedesktop.DBus.Error.InvalidArgs": Explained("Invalid arguments", 5),
    "org.freedesktop.DBus.Error.UnknownMethod": Explained(
        "This btrfsd does not know that call (client and daemon versions differ?)", EXIT_FAILED),
    # btrfsctl --host/--hosts/fleet (docs/fleet.md)
    "org.btrfsd1.Fleet.Error.NoResponders": Explained(
        "The host does not answer over NATS (is its btrfsd-fleet running? btrfsctl fleet "
        "status tells since when it is away)", EXIT_NO_DAEMON),
    "org.btrfsd1.Fleet.Error.NoServer": Explained(
        "Cannot reach NATS (see --nats, or [nats] in ~/.config/btrfsd/fleet.toml)",
        EXIT_NO_DAEMON),
    "org.btrfsd1.Fleet.Error.NotPermitted": Explained(
        "NATS refused the request (your NATS user's subject permissions)", 12),
    "org.btrfsd1.Fleet.Error.Timeout": Explained(
        "The host's bridge did not answer in time", EXIT_FAILED),
    "org.btrfsd1.Fleet.Error.BadConfig": Explained("Bad fleet settings", EXIT_USAGE),
}


def explain(error_name: str) -> Explained:
    """Return the sentence and exit code for a D-Bus error name (a generic one if unknown)."""
    return EXPLANATIONS.get(error_name, Explained(f"Error {error_name}", EXIT_FAILED))


# -- hints: the daemon names the situation, btrfsctl words the advice -------------------
# Keys of an error's details that are not facts (see CallError).
_NOT_FACTS = ("message", "hint")
# Operations that btrfsctl can cancel by filesystem path.
_CANCELABLE = ("scrub", "balance")


def _enable_quota(details: Mapping[str, Any]) -> str:
    return "Quotas must be on: enable them first with btrfsctl quota enable PATH."


def _job_running(details: Mapping[str, Any]) -> str:
    operation = details.get("operation")
    if operation in _CANCELABLE:
        return (f"Wait for it (btrfsctl jobs --follow) or cancel it "
                f"(btrfsctl {operation} cancel PATH).")
    return "Wait for it (btrfsctl jobs --follow)."


def _other_filesystem(details: Mapping[str, Any]) -> str:
    path = details.get("path")
    where = path if isinstance(path, str) and path else "That path"
    return f"{where} is on another filesystem; give a path on the filesystem you mean."


def _list_schedules(details: Mapping[str, Any]) -> str:
    return "btrfsctl schedule list shows the schedules."


ADVICE: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "enable-quota": _enable_quota,
    "job-running": _job_running,
    "other-filesystem": _other_filesystem,
    "list-schedules": _list_schedules,
}


def advice(details: Mapping[str, Any]) -> str | None:
    """btrfsctl's one-sentence advice for ``details["hint"]``; None when there is no hint
    or it is one this btrfsctl does not know. Raises nothing."""
    hint = details.get("hint")
    word = ADVICE.get(hint) if isinstance(hint, str) else None
    return word(details) if word is not None else None


def reason(error: CallError) -> str:
    """What went wrong, as printed after the explanation. Raises nothing.

    With structured details it is the core's message plus btrfsctl's advice; without them,
    or with a hint this btrfsctl cannot word, it is the reply's full text, whose generic
    advice is better than none.
    """
    message = error.details.get("message")
    if not isinstance(message, str) or not message:
        return error.text
    tip = advice(error.details)
    if tip is not None:
        return f"{message} {tip}"
    return error.text if "hint" in error.details else message


def error_line(error: CallError) -> str:
    """The one line btrfsctl prints on stderr for ``error``. Raises nothing."""
    return f"btrfsctl: {explain(error.name).sentence}: {reason(error)}"


def error_json(error: CallError) -> dict[str, Any]:
    """The JSON object btrfsctl --json prints for ``error``: ``error`` (the D-Bus name),
    ``message`` (what the human line says after the explanation: btrfsctl's words, not
    the D-Bus API's), and when the daemon sent them ``hint`` and the facts. Raises
    nothing."""
    facts = {k: v for k, v in error.details.items() if k not in _NOT_FACTS}
    data = {**facts, "error": error.name, "message": reason(error)}
    hint = error.details.get("hint")
    if isinstance(hint, str):
        data["hint"] = hint
    return data
