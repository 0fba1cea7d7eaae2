"""What a notification says: summary, body, urgency and what its action opens (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .throttle import level_rank

# org.freedesktop.Notifications urgency hint values
LOW, NORMAL, CRITICAL = 0, 1, 2
SCRUB_ERROR_COUNTERS = ("read_errors", "csum_errors", "verify_errors", "super_errors")


@dataclass(frozen=True)
class Note:
    """One notification, and the detail its action opens: ``kind`` (quota or job) and
    ``target`` (the mount point for quota, the job's object path for a job)."""

    summary: str
    body: str
    urgency: int
    kind: str
    target: str
    mount: str


def human(n: int) -> str:
    """Bytes as people read them: 1.5 GiB."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def quota_note(where: str, mount: str, used: int, limit: int, level: str) -> Note:
    """A QuotaWarning for the subvolume shown as ``where`` (a path, or its qgroup)."""
    percent = 100 * used // limit if limit else 100
    summary = {"warning": f"{where} is getting full",
               "critical": f"{where} is nearly full",
               "exceeded": f"{where} is full"}.get(level, f"{where}: quota {level}")
    body = f"{human(used)} of {human(limit)} used ({percent} %)."
    if level == "exceeded":
        body += " Writes are refused until something is deleted or the limit is raised."
    urgency = CRITICAL if level_rank(level) >= 1 else NORMAL
    return Note(summary, body, urgency, "quota", mount, mount)


def job_note(props: dict[str, Any], mount: str, job_path: str) -> Note | None:
    """A finished job worth telling about: failed, or a scrub that found errors; None
    for one that went well or was cancelled."""
    op = str(props.get("Operation", "job"))
    state = str(props.get("State", ""))
    message = str(props.get("Message", ""))
    details = props.get("Details", {})
    errors = sum(int(details.get(c, 0)) for c in SCRUB_ERROR_COUNTERS)
    on = f" on {mount}" if mount else ""
    if state == "failed":
        return Note(f"{op.capitalize()}{on} failed", message or str(props.get("Error", "")),
                    CRITICAL, "job", job_path, mount)
    if state == "completed" and (not props.get("Success", True) or (op == "scrub" and errors)):
        return Note(f"Scrub{on} found errors" if op == "scrub" else f"{op.capitalize()}{on} "
                    "had problems", message, CRITICAL, "job", job_path, mount)
    return None
