"""Object paths of exported objects."""

from __future__ import annotations

from ..constants import FILESYSTEMS_PATH


def filesystem_path(uuid: str) -> str:
    """Object path of a filesystem: its UUID with '-' as '_' (object paths allow no '-')."""
    return f"{FILESYSTEMS_PATH}/{uuid.replace('-', '_')}"
