"""D-Bus error names -> a plain sentence and a distinct exit code (see docs/cli.md)."""

from __future__ import annotations

from dataclasses import dataclass

from ..constants import ERROR_PREFIX


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
}


def explain(error_name: str) -> Explained:
    """Return the sentence and exit code for a D-Bus error name (a generic one if unknown)."""
    return EXPLANATIONS.get(error_name, Explained(f"Error {error_name}", EXIT_FAILED))
