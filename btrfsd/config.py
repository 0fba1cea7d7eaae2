"""Daemon settings: defaults, overridden by an optional TOML file, then by flags.

A bad setting stops the daemon with a message naming it, except in the ``[quota_alerts]``
table: alerts are a side service, so a bad value there falls back to its default (a bad
per-target override is left out) and the problem is logged; see ``load_settings``.
"""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

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
    # How many expensive reads (listings, quota reports, schedule explanations) one
    # unprivileged caller may have running at once; more are refused with Busy.
    reads_per_caller: int = Field(default=2, ge=1, le=64)
    # The share of btrfsd's time one unprivileged caller's expensive reads may take over
    # time (0.25: a quarter), and how many seconds of them may come at once before the
    # share applies; past it a read waits its turn, or gets Busy if that is over 5 s.
    read_share: float = Field(default=0.25, gt=0, le=1)
    read_burst: float = Field(default=1.0, gt=0, le=60)


class ConfigError(Exception):
    """The configuration file cannot be read or is invalid."""


class Loaded(NamedTuple):
    settings: Settings
    # What of the file was not used, one sentence each, for the log.
    problems: list[str]


LEVEL_KEYS = ("warning", "critical", "exceeded", "margin")


def _msg(err: ErrorDetails) -> str:
    return err["msg"].removeprefix("Value error, ").lower()


def _what(err: ErrorDetails) -> str:
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {_msg(err)}" if where else _msg(err)


def _describe(e: ValidationError) -> str:
    return "; ".join(_what(err) for err in e.errors())


def _usable_quota_alerts(raw: object) -> tuple[dict[str, Any], list[str]]:
    """The part of a ``[quota_alerts]`` table that is valid, and what was left out.

    A bad or unknown key is left out (so its default applies); levels out of order
    (warning < critical <= exceeded) all fall back to theirs; then each override is
    checked against the levels that stand, and a bad one is left out whole: half an
    override would be levels nobody wrote.
    """
    if not isinstance(raw, dict):
        return {}, [f"[quota_alerts] is not a table ({raw!r}); using the default quota "
                    "alert settings"]
    problems: list[str] = []
    table = {k: v for k, v in raw.items() if k != "overrides"}
    fields = QuotaAlertSettings.model_fields
    while True:
        try:
            base = QuotaAlertSettings.model_validate(table)
            break
        except ValidationError as e:
            bad = {str(err["loc"][0]): err for err in e.errors() if err["loc"]}
            for key, err in bad.items():
                if key in fields:
                    problems.append(f"[quota_alerts] {key} = {table[key]!r}: "
                                    f"{_msg(err)}; using the default "
                                    f"{fields[key].default!r}")
                else:
                    problems.append(f"[quota_alerts] {key}: not a setting; ignored")
                table.pop(key, None)
            if not bad:  # each value is valid alone: the levels are out of order
                given = ", ".join(f"{k} = {table[k]!r}" for k in LEVEL_KEYS if k in table)
                problems.append(f"[quota_alerts] {given or 'levels'}: {_describe(e)}; "
                                "using the default levels")
                if not given:  # cannot happen with the defaults; never loop for it
                    table.clear()
                for key in LEVEL_KEYS:
                    table.pop(key, None)
    overrides = raw.get("overrides", {})
    if not isinstance(overrides, dict):
        problems.append(f"[quota_alerts] overrides is not a table ({overrides!r}); "
                        "ignored")
        overrides = {}
    levels = base.model_dump(include=set(LEVEL_KEYS))
    kept: dict[str, dict[str, float]] = {}
    for target, override in overrides.items():
        try:
            if not isinstance(override, dict):
                raise ValueError(f"not a table ({override!r})")
            valid = Thresholds.model_validate({**levels, **override})
            kept[target] = {k: getattr(valid, k) for k in override}
        except ValueError as e:  # ValidationError is one
            why = _describe(e) if isinstance(e, ValidationError) else str(e)
            problems.append(f"[quota_alerts] override for {target!r} left out ({why}); "
                            "the levels above apply there")
    if overrides:
        table["overrides"] = kept
    return table, problems


def load_settings(path: Path | None = None, **overrides: object) -> Loaded:
    """Load settings from ``path`` (default /etc/btrfsd/btrfsd.toml, if it exists), then
    ``overrides`` (command line flags; None means not given).

    Bad values in ``[quota_alerts]`` are left out and listed in ``problems`` (the file is
    the administrator's: it is never changed or moved). Raises ConfigError naming the
    file and the bad key for anything else: running with a state directory or log
    settings other than the ones written would be worse than not running.
    """
    data: dict[str, object] = {}
    problems: list[str] = []
    file = path or DEFAULT_CONFIG_FILE
    if path is not None or file.exists():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{file}: {e}") from e
    if "quota_alerts" in data:
        data["quota_alerts"], problems = _usable_quota_alerts(data["quota_alerts"])
        problems = [f"{file}: {p}" for p in problems]
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Loaded(Settings.model_validate(data), problems)
    except ValidationError as e:
        raise ConfigError(f"{file}: {_describe(e)}") from e


def load(path: Path | None = None, **overrides: object) -> Settings:
    """``load_settings``, logging its problems. Raises ConfigError."""
    settings, problems = load_settings(path, **overrides)
    for problem in problems:
        logging.getLogger(__name__).error("%s", problem)
    return settings
