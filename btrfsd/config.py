"""Daemon settings: defaults, overridden by an optional TOML file, then by flags."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_CONFIG_FILE = Path("/etc/btrfsd/btrfsd.toml")


class Thresholds(BaseModel):
    """Quota alert levels in percent of a limit, and the re-arm margin in points."""

    model_config = ConfigDict(extra="forbid")

    warning: float = Field(default=80, gt=0, le=100)
    critical: float = Field(default=95, gt=0, le=100)
    exceeded: float = Field(default=100, gt=0, le=100)
    # A level fires again only after usage fell this many points below it.
    margin: float = Field(default=5, ge=0, le=50)

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if not self.warning < self.critical <= self.exceeded:
            raise ValueError("need warning < critical <= exceeded")
        return self


class QuotaAlertSettings(Thresholds):
    """The quota alert watcher: how often it looks, and the levels."""

    interval: float = Field(default=30.0, ge=0.2, le=3600)
    # Per filesystem (UUID) or subvolume (absolute path) changes of the levels above,
    # e.g. overrides = { "/home/alice" = { warning = 90 } }.
    overrides: dict[str, dict[str, float]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _overrides_valid(self) -> QuotaAlertSettings:
        for key in self.overrides:
            self.for_target(key, [])  # raises ValidationError for a bad override
        return self

    def for_target(self, fs_uuid: str, paths: list[str]) -> Thresholds:
        """The levels for a qgroup: a subvolume override, else a filesystem one, else these."""
        base = self.model_dump(include={"warning", "critical", "exceeded", "margin"})
        for key in (*paths, fs_uuid):
            if key in self.overrides:
                return Thresholds.model_validate({**base, **self.overrides[key]})
        return Thresholds.model_validate(base)


class Settings(BaseModel):
    """What an operator can set. Unknown keys are errors, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid")

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    # How often space figures are re-read for PropertiesChanged (mounts are watched live).
    refresh_interval: float = Field(default=10.0, gt=0, le=3600)
    # Where job results and interrupted-job records live (systemd: StateDirectory=btrfsd).
    state_dir: Path = Path("/var/lib/btrfsd")
    # Where schedules are stored (schedules.json; systemd: ConfigurationDirectory=btrfsd).
    config_dir: Path = Path("/etc/btrfsd")
    # How long finished jobs stay on the bus (seconds) before their objects are removed.
    job_retention: float = Field(default=600.0, ge=0, le=7 * 86400)
    # How often a running job's progress is read; also caps its PropertiesChanged rate.
    job_poll_interval: float = Field(default=0.5, ge=0.5, le=60)
    quota_alerts: QuotaAlertSettings = Field(default_factory=QuotaAlertSettings)
    # With full qgroups, free deleted subvolumes fast (drop_subtree_threshold 0) and
    # rescan once the cleaner is done, instead of minutes of accounting per snapshot.
    quota_fast_delete: bool = True


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
