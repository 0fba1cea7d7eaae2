"""Object paths of exported objects."""

from __future__ import annotations

from ..constants import FILESYSTEMS_PATH, JOBS_PATH


def filesystem_path(uuid: str) -> str:
    """Object path of a filesystem: its UUID with '-' as '_' (object paths allow no '-')."""
    return f"{FILESYSTEMS_PATH}/{uuid.replace('-', '_')}"


def job_path(job_id: int) -> str:
    """Object path of a job (stable: ids are never reused, see JobManager)."""
    return f"{JOBS_PATH}/{job_id}"
