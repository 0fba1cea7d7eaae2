"""Validation of the trailing ``a{sv} options`` argument every method takes."""

from __future__ import annotations

from typing import Annotated, TypeVar

from dbus_fast import Variant
from dbus_fast.annotations import DBusSignature
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ..errors import InvalidArgument

# The type of every method's trailing options argument.
OptionsArg = Annotated[dict[str, Variant], DBusSignature("a{sv}")]


class Options(BaseModel):
    """Base of per-method option sets: unknown keys and wrong types are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NoOptions(Options):
    """For methods that take no options yet (the argument exists for compatibility)."""


class DeleteOptions(Options):
    recursive: bool = False


class SnapshotOptions(Options):
    read_only: bool = True
    recursive: bool = False


# The names of ListSubvolumes' columns, in order (GetSubvolume's keys; docs/api.md).
SUBVOLUME_FIELDS = ("id", "parent_id", "path", "uuid", "parent_uuid", "received_uuid",
                    "generation", "ctime", "otime", "read_only", "is_snapshot",
                    "referenced", "exclusive", "max_referenced", "max_exclusive")


class ListOptions(Options):
    snapshots_of: str = ""
    # Only these columns are filled, the others are empty arrays (the reply's type stays
    # the same): a front end moves only what it shows. Empty: all of them.
    columns: list[str] = Field(default=[], max_length=len(SUBVOLUME_FIELDS))

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, value: list[str]) -> list[str]:
        unknown = [c for c in value if c not in SUBVOLUME_FIELDS]
        if unknown:
            raise ValueError(f"unknown column {', '.join(map(repr, unknown))}; the columns "
                             f"are {', '.join(SUBVOLUME_FIELDS)}")
        return value


class ScrubOptions(Options):
    readonly: bool = False  # report errors without repairing them
    limit: int = Field(default=0, ge=0, lt=2**64)  # bytes/s per device; 0 keeps the current


class BalanceOptions(Options):
    """btrfsmaintenance-style filters: usage percent and chunk count per type."""

    data_usage: int | None = Field(default=None, ge=0, le=100)
    metadata_usage: int | None = Field(default=None, ge=0, le=100)
    limit: int | None = Field(default=None, ge=1, lt=2**32)
    # A balance without filters rewrites every chunk (hours on a big filesystem): ask
    # for it explicitly.
    full: bool = False

    @model_validator(mode="after")
    def _filters_or_full(self) -> BalanceOptions:
        filtered = self.data_usage is not None or self.metadata_usage is not None
        if not filtered and not self.full:
            raise ValueError("give data_usage and/or metadata_usage, or full=true for a "
                             "full balance")
        if filtered and self.full:
            raise ValueError("full=true balances every chunk; do not combine it with usage "
                             "filters")
        return self


# Rows of one CompareSnapshots reply at most: a reply stays a few MiB however many
# paths changed; a client pages with offset.
MAX_COMPARE_ROWS = 100_000


class CompareOptions(Options):
    offset: int = Field(default=0, ge=0, lt=2**63)  # rows to skip (paging)
    limit: int = Field(default=10_000, ge=1, le=MAX_COMPARE_ROWS)  # rows at most


class EnableQuotaOptions(Options):
    simple: bool = False  # squota: cheap with many snapshots; counts new writes only
    force: bool = False  # enable full qgroups despite many snapshots


class QuotaUsageOptions(Options):
    sync: bool = False  # commit first so the numbers include the latest writes


class SetScheduleOptions(Options):
    replace: bool = False  # change an existing schedule instead of refusing the name


class CleanupOptions(Options):
    dry_run: bool = False


class SnapshotInfo(Options):
    important: bool | None = None
    description: str | None = Field(default=None, max_length=1024)


class RestoreOptions(Options):
    destination: str = ""  # a directory to restore into instead of the original places
    overwrite: bool = False  # replace what is there instead of moving it aside


M = TypeVar("M", bound=Options)


def parse_options(model: type[M], options: dict[str, Variant]) -> M:
    """Validate ``options`` against ``model``. Raises InvalidArgument naming each problem."""
    try:
        return model.model_validate({k: v.value for k, v in options.items()})
    except ValidationError as e:
        problems = []
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"]) or "options"
            if not err["loc"]:  # a rule about several options together
                problems.append(str(err["msg"]).removeprefix("Value error, "))
            elif err["type"] == "extra_forbidden":
                problems.append(f"unknown option '{key}'")
            else:
                problems.append(f"option '{key}': {err['msg'].lower()}")
        known = ", ".join(model.model_fields) or "none"
        raise InvalidArgument(
            f"Bad options: {'; '.join(problems)} (known options: {known})."
        ) from None
