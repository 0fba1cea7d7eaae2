"""D-Bus reply values as plain Python values, for btrfsd's clients (btrfsctl, btrfsd-notify).

Standard library only: btrfsctl's lean path imports it without dbus-fast.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~5 ms at btrfsctl's start; mypy reads the block
if TYPE_CHECKING:
    from typing import Any


def unwrap(value: Any) -> Any:
    """Turn Variants (at any depth) into plain Python values. Raises nothing.

    A Variant is recognised by its ``signature`` and ``value`` (dbus-fast's, or one a
    small client made), so this needs no D-Bus library.
    """
    if hasattr(value, "signature") and hasattr(value, "value"):
        return unwrap(value.value)
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value
