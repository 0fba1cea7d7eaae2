"""Every member, argument, property and signal of the shipped interfaces has a name and a
doc annotation, and docs/interfaces/*.xml is what the interfaces introspect to now."""

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from dbus_fast.service import ServiceInterface, dbus_method

from btrfsd.bus import introspect
from btrfsd.bus.apidoc import DOC, Doc, documented

SHIPPED = Path(__file__).resolve().parents[2] / "docs" / "interfaces"


def _doc(el: ET.Element) -> str:
    found = [a.get("value") for a in el.findall("annotation") if a.get("name") == DOC]
    return found[0] or "" if found else ""


def test_every_member_and_argument_is_named_and_documented() -> None:
    for iface in introspect.interfaces():
        root = iface.introspect().to_xml()
        members = [*root.iter("method"), *root.iter("signal"), *root.iter("property")]
        assert members
        for m in members:
            where = f"{iface.name}.{m.get('name')}"
            assert _doc(m), f"{where} has no {DOC}"
            for arg in m.iter("arg"):
                assert arg.get("name"), f"{where}: an argument has no name"
                assert _doc(arg), f"{where}({arg.get('name')}) has no {DOC}"


def test_shipped_xml_is_current(tmp_path: Path) -> None:
    for written in introspect.write(tmp_path):
        assert written.read_text() == (SHIPPED / written.name).read_text(), (
            f"{written.name} changed: python -m btrfsd.bus.introspect docs/interfaces")


def test_an_undocumented_member_is_refused() -> None:
    class Probe(ServiceInterface):
        @dbus_method(name="Ping")
        async def ping(self, what: "s") -> "s":  # type: ignore[name-defined]  # noqa: F821
            return what

    with pytest.raises(ValueError, match="no text"):
        documented({})(Probe)
    with pytest.raises(ValueError, match="in-arguments"):
        documented({"Ping": Doc("Ping.", {}, (("echo", "x"),))})(Probe)
    with pytest.raises(ValueError, match="lacks"):
        documented({"Ping": Doc("Ping.", {"what": "x"}, (("echo", "x"),)),
                    "Gone": Doc("?")})(Probe)
    documented({"Ping": Doc("Ping.", {"what": "x"}, (("echo", "x"),))})(Probe)
    method = Probe("org.example.P").introspect().methods[0]
    assert method.out_args[0].name == "echo"
    assert method.annotations[DOC] == "Ping."
