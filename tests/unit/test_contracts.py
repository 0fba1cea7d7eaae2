"""Frozen public contracts: error names, polkit actions, fail-closed export, CLI errors."""

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from dbus_fast import Variant
from dbus_fast.service import ServiceInterface, dbus_method

from btrfsd.bus.auth import authorized, check_interface
from btrfsd.bus.introspect import interfaces
from btrfsd.bus.options import DeleteOptions, SnapshotOptions, parse_options
from btrfsd.cli.errors import EXPLANATIONS, explain
from btrfsd.constants import ALL_ACTIONS, ERROR_PREFIX, Action
from btrfsd.errors import ERROR_NAMES, InvalidArgument

REPO = Path(__file__).resolve().parents[2]


def test_error_names_are_frozen() -> None:
    frozen = {"NotFound", "AlreadyExists", "InvalidArgument", "NotBtrfs", "Busy", "NoSpace",
              "QuotaExceeded", "AlreadyRunning", "Cancelled", "Failed"}
    assert frozen == ERROR_NAMES


def test_cli_explains_every_error_with_distinct_codes() -> None:
    codes = {}
    for name in ERROR_NAMES:
        ex = explain(ERROR_PREFIX + name)
        assert not ex.sentence.startswith("Error ")
        codes[name] = ex.exit_code
    assert len(set(codes.values())) == len(codes)
    assert explain("org.freedesktop.DBus.Error.AccessDenied").exit_code not in codes.values()
    assert all(e.exit_code != 0 for e in EXPLANATIONS.values())


def test_policy_file_has_exactly_the_actions() -> None:
    tree = ET.parse(REPO / "polkit-actions" / "org.btrfsd1.policy")
    ids = {a.get("id") for a in tree.iter("action")}
    assert ids == set(ALL_ACTIONS)
    manage = next(a for a in tree.iter("action") if a.get("id") == Action.MANAGE)
    implied = set(manage.find("annotate").text.split())  # type: ignore[union-attr]
    assert implied == set(ALL_ACTIONS) - {Action.MANAGE}


def test_every_shipped_interface_passes_fail_closed_check() -> None:
    for iface in interfaces():
        check_interface(iface)


def test_export_refuses_a_method_without_action() -> None:
    class Leaky(ServiceInterface):
        def __init__(self) -> None:
            super().__init__("org.btrfsd1.Leaky")

        @dbus_method()
        async def Ok(self) -> None:
            pass

    with pytest.raises(RuntimeError, match="declare no polkit action"):
        check_interface(Leaky())


def test_unknown_action_is_refused_at_import() -> None:
    with pytest.raises(ValueError):
        authorized("org.btrfsd1.bogus")


def test_options_validation() -> None:
    assert parse_options(DeleteOptions, {}).recursive is False
    assert parse_options(SnapshotOptions, {"read_only": Variant("b", False)}).read_only is False
    with pytest.raises(InvalidArgument, match="unknown option 'x'"):
        parse_options(DeleteOptions, {"x": Variant("b", True)})
    with pytest.raises(InvalidArgument, match="recursive"):
        parse_options(DeleteOptions, {"recursive": Variant("s", "true")})
    with pytest.raises(InvalidArgument):
        parse_options(DeleteOptions, {"recursive": Variant("u", 1)})


def test_dbus_policy_only_root_owns() -> None:
    tree = ET.parse(REPO / "dbus-policy" / "org.btrfsd1.conf")
    owners = [(p.get("user"), a.get("own")) for p in tree.iter("policy") for a in p
              if a.get("own")]
    assert owners == [("root", "org.btrfsd1")]
