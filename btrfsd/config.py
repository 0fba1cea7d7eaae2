"""Daemon settings: defaults, overridden by an optional TOML file, then by flags."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_CONFIG_FILE = Path("/etc/btrfsd/btrfsd.toml")


class Settings(BaseModel):
    """What an operator can set. Unknown keys are errors, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid")

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    # How often space figures are re-read for PropertiesChanged (mounts are watched live).
    refresh_interval: float = Field(default=10.0, gt=0, le=3600)
    # Where job results and interrupted-job records live (systemd: StateDirectory=btrfsd).
    state_dir: Path = Path("/var/lib/btrfsd")
    # How long finished jobs stay on the bus (seconds) before their objects are removed.
    job_retention: float = Field(default=600.0, ge=0, le=7 * 86400)
    # How often a running job's progress is read; also caps its PropertiesChanged rate.
    job_poll_interval: float = Field(default=0.5, ge=0.5, le=60)


class ConfigError(Exception):
    """The configuration file cannot be read or is invalid."""


def load(path: Path | None = None, **overrides: object) -> Settings:
    """Load settings from ``path`` (default /etc/btrfsd/btrfsd.toml, if it exists).

    Raises ConfigError naming the file and the bad key.
    """
    data: dict[str, object] = {}
    file = path or DEFAULT_CONFIG_FILE
    if path is not None or file.exists():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{file}: {e}") from e
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{file}: {e}") from e
