"""Settings of the fleet: how to reach NATS (bridge and clients alike) and the bridge's own.

The bridge reads ``/etc/btrfsd/fleet.toml``; btrfsctl reads ``$BTRFSD_FLEET_CONFIG`` or
``~/.config/btrfsd/fleet.toml`` (only its ``[nats]`` table). A bad setting is refused with
a message naming it (SettingsError).
"""

from __future__ import annotations

import os
import socket
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .protocol import HOST_RE

DEFAULT_BRIDGE_CONFIG = Path("/etc/btrfsd/fleet.toml")
DEFAULT_BUCKET = "btrfsd-fleet"


class SettingsError(Exception):
    """A fleet settings file that cannot be read or does not validate."""


class NatsSettings(BaseModel):
    """Where NATS is and how to log in: a .creds file (JWT + NKey), an NKey seed file, or
    a user with a password file (never a password in the file itself: config files are
    often world-readable). TLS with ``tls_ca`` (and a client certificate if the server
    asks for one)."""

    model_config = ConfigDict(extra="forbid")

    servers: list[str] = Field(default_factory=lambda: ["nats://127.0.0.1:4222"], min_length=1)
    creds: Path | None = None
    nkey_seed: Path | None = None
    user: str | None = None
    password_file: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    connect_timeout: float = Field(default=5.0, gt=0, le=120)
    # how long to wait between attempts to reach a server again; attempts never stop
    reconnect_wait: float = Field(default=1.0, gt=0, le=60)
    request_timeout: float = Field(default=30.0, gt=0, le=3600)

    @field_validator("creds", "nkey_seed", "password_file", "tls_ca", "tls_cert", "tls_key")
    @classmethod
    def _home(cls, v: Path | None) -> Path | None:
        return v.expanduser() if v is not None else None

    @field_validator("servers")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        for url in v:
            if not url.startswith(("nats://", "tls://", "ws://", "wss://")):
                raise ValueError(f"{url!r} is not a nats://, tls://, ws:// or wss:// URL")
        return v


class BridgeSettings(BaseModel):
    """btrfsd-fleet's settings (docs/fleet.md)."""

    model_config = ConfigDict(extra="forbid")

    # this host's name in subjects (btrfsd.<host>.…); default: the short host name
    host: str = Field(default_factory=lambda: socket.gethostname().split(".")[0])
    # seconds between status writes to the key-value bucket; a host is shown unreachable
    # after three missed writes
    heartbeat: float = Field(default=15.0, ge=0.2, le=3600)
    status_bucket: str = Field(default=DEFAULT_BUCKET, pattern=r"^[A-Za-z0-9_-]+$")
    # calls served at once (the system bus allows 128 pending replies per connection)
    max_in_flight: int = Field(default=32, ge=1, le=100)
    # how long one D-Bus call to btrfsd may take before the caller gets NoReply
    call_timeout: float = Field(default=60.0, gt=0, le=3600)
    # events kept for the events stream while NATS is away (job ends, quota warnings,
    # filesystems added/removed); past this the oldest are dropped
    event_queue: int = Field(default=10000, ge=10, le=1_000_000)
    nats: NatsSettings = Field(default_factory=NatsSettings)

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not HOST_RE.match(v):
            raise ValueError("a host name is letters, digits, '-' and '_' (one NATS subject "
                             "token: no dots), at most 63 characters")
        return v


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise SettingsError(f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"{path} is not valid TOML: {e}") from None


def _explain(path: Path | str, e: ValidationError) -> SettingsError:
    parts = []
    for err in e.errors():
        where = ".".join(str(x) for x in err["loc"]) or "(top level)"
        parts.append(f"{where}: {err['msg']}")
    return SettingsError(f"{path}: " + "; ".join(parts))


def load_bridge(path: Path | None, host: str | None = None) -> BridgeSettings:
    """The bridge's settings from ``path`` (missing default file: all defaults), with
    ``host`` overriding. Raises SettingsError."""
    data: dict[str, Any] = {}
    if path is not None:
        data = _read_toml(path)
    elif DEFAULT_BRIDGE_CONFIG.exists():
        data, path = _read_toml(DEFAULT_BRIDGE_CONFIG), DEFAULT_BRIDGE_CONFIG
    if host is not None:
        data["host"] = host
    try:
        return BridgeSettings.model_validate(data)
    except ValidationError as e:
        raise _explain(path or "settings", e) from None


def client_config_path() -> Path:
    env = os.environ.get("BTRFSD_FLEET_CONFIG")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "btrfsd" / "fleet.toml"


def load_client(servers: str | None = None, creds: str | None = None) -> NatsSettings:
    """btrfsctl's NATS settings: the ``[nats]`` table of client_config_path() if it
    exists, then ``--nats URL[,URL]`` and ``--creds FILE``. Raises SettingsError."""
    path = client_config_path()
    data: dict[str, Any] = {}
    if path.exists():
        raw = _read_toml(path)
        extra = set(raw) - {"nats"}
        if extra:
            raise SettingsError(f"{path}: unknown tables or keys {sorted(extra)} (only [nats])")
        data = dict(raw.get("nats", {}))
    if servers:
        data["servers"] = [s.strip() for s in servers.split(",") if s.strip()]
    if creds:
        data["creds"] = creds
    try:
        return NatsSettings.model_validate(data)
    except ValidationError as e:
        raise _explain(path, e) from None
