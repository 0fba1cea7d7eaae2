"""Validation of the trailing ``a{sv} options`` argument every method takes."""

from __future__ import annotations

from typing import Annotated, TypeVar

from dbus_fast import Variant
from dbus_fast.annotations import DBusSignature
from pydantic import BaseModel, ConfigDict, ValidationError

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


class ListOptions(Options):
    snapshots_of: str = ""


M = TypeVar("M", bound=Options)


def parse_options(model: type[M], options: dict[str, Variant]) -> M:
    """Validate ``options`` against ``model``. Raises InvalidArgument naming each problem."""
    try:
        return model.model_validate({k: v.value for k, v in options.items()})
    except ValidationError as e:
        problems = []
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"]) or "options"
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown option '{key}'")
            else:
                problems.append(f"option '{key}': {err['msg'].lower()}")
        known = ", ".join(model.model_fields) or "none"
        raise InvalidArgument(
            f"Bad options: {'; '.join(problems)} (known options: {known})."
        ) from None
