"""A host's last status as kept in the JetStream key-value bucket (one key per host), so
``btrfsctl fleet status`` can answer for hosts that are down.

The bridge writes it every ``heartbeat`` seconds and at once after a job ends or a
filesystem comes or goes; a reader calls a host unreachable when its last write is older
than STALE_BEATS heartbeats.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from nats.aio.client import Client as NATS
from nats.js.errors import BucketNotFoundError, KeyNotFoundError

STALE_BEATS = 3
MAX_QUOTA_WARNINGS = 20  # the newest ones; older are dropped
# key-value gets in flight at once when reading every host (one connection pipelines them)
READ_AT_ONCE = 64


@dataclass
class QuotaWarningRecord:
    filesystem: str
    path: str
    qgroupid: int
    used: int
    limit: int
    level: str
    time: float


@dataclass
class HostStatus:
    host: str
    heartbeat: float
    state: str = "up"  # "up" or "stopped" (the bridge said goodbye)
    last_seen: float = 0.0  # seconds since the epoch, the bridge's clock
    version: str = ""
    btrfsd: str = "unknown"  # "running" or "unreachable" (the bridge is up, btrfsd not)
    error: str = ""
    filesystems: list[dict[str, Any]] = field(default_factory=list)
    quota_warnings: list[dict[str, Any]] = field(default_factory=list)

    @staticmethod
    def filesystem(path: str, props: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
        """The summary of one filesystem from its properties and GetLastResults."""
        scrub = last.get("scrub") or {}
        details = scrub.get("details") or {}
        errors = sum(int(details.get(k, 0)) for k in (
            "read_errors", "csum_errors", "verify_errors", "super_errors",
            "uncorrectable_errors") if isinstance(details.get(k, 0), int))
        return {
            "object": path, "uuid": props.get("Uuid", ""), "label": props.get("Label", ""),
            "mount_points": props.get("MountPoints", []),
            "total_bytes": props.get("TotalBytes", 0), "used_bytes": props.get("UsedBytes", 0),
            "free_bytes": props.get("FreeBytes", 0),
            "quota_enabled": props.get("QuotaEnabled", False),
            "last_scrub": {"state": scrub.get("state", ""), "end_time": scrub.get("end_time", 0),
                           "message": scrub.get("message", ""), "errors": errors}
            if scrub else None,
        }

    def quota_warning(self, record: QuotaWarningRecord) -> None:
        self.quota_warnings = [*self.quota_warnings, asdict(record)][-MAX_QUOTA_WARNINGS:]

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> HostStatus:
        """Raises ValueError for a value that is not a status record."""
        raw = json.loads(data)
        if not isinstance(raw, dict) or not isinstance(raw.get("host"), str):
            raise ValueError("not a host status record")
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        try:
            return cls(**known)
        except TypeError as e:
            raise ValueError(str(e)) from None

    def reachable(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self.state == "up" and now - self.last_seen <= STALE_BEATS * self.heartbeat

    def summary(self, now: float | None = None) -> str:
        """"up", "unreachable since <UTC time>" or "stopped since <UTC time>"."""
        if self.reachable(now):
            return "up" if self.btrfsd != "unreachable" else "up, btrfsd not answering"
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.last_seen))
        return f"{'stopped' if self.state == 'stopped' else 'unreachable'} since {since}"

    def as_dict(self, now: float | None = None) -> dict[str, Any]:
        d = asdict(self)
        d["reachable"] = self.reachable(now)
        d["summary"] = self.summary(now)
        return d


async def read_all(nc: NATS, bucket: str) -> list[HostStatus]:
    """Every host's last status in ``bucket``, by host name; [] when the bucket does not
    exist yet (no bridge has written). Raises nats errors (e.g. a permission refusal
    surfaces as a timeout of the JetStream API call)."""
    js = nc.jetstream()
    try:
        kv = await js.key_value(bucket)
    except BucketNotFoundError:
        return []
    # The stream's per-subject counts name every key without a consumer (which would
    # need more permissions than reading).
    info = await js.stream_info(f"KV_{bucket}", subjects_filter=f"$KV.{bucket}.>")
    keys = sorted(s.split(".", 2)[2] for s in (info.state.subjects or {}))
    slots = asyncio.Semaphore(READ_AT_ONCE)

    async def one(key: str) -> HostStatus | None:
        async with slots:
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:
                return None
        if entry.value is None:
            return None
        try:
            return HostStatus.from_json(entry.value)
        except ValueError:
            return None  # not written by a bridge: not a host

    found = await asyncio.gather(*(one(k) for k in keys))
    return [h for h in found if h is not None]
