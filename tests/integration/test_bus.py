"""What front ends rely on: ObjectManager, live InterfacesAdded/Removed, introspection
matching the shipped XML, and foreign clients (busctl, gdbus)."""

from __future__ import annotations

import asyncio
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from conftest import World

from btrfsd.constants import FILESYSTEM_IFACE, MANAGER_IFACE

DOCS = Path(__file__).resolve().parents[2] / "docs" / "interfaces"


def _iface_xml(xml: str, name: str) -> str:
    for iface in ET.fromstring(xml).iter("interface"):
        if iface.get("name") == name:
            ET.indent(iface)
            return ET.tostring(iface, encoding="unicode").strip()
    raise AssertionError(f"{name} not in introspection")


def test_introspection_matches_shipped_xml(world: World) -> None:
    for path, name in (("/org/btrfsd1", MANAGER_IFACE), (world.fs_path(), FILESYSTEM_IFACE)):
        r = world.root.call(path, "org.freedesktop.DBus.Introspectable", "Introspect")
        live = _iface_xml(r["body"][0], name)
        shipped = _iface_xml((DOCS / f"{name}.xml").read_text(), name)
        assert live == shipped, f"{name} changed: regenerate docs/interfaces (docs/api.md)"


def test_get_managed_objects(world: World) -> None:
    r = world.root.call("/org/btrfsd1", "org.freedesktop.DBus.ObjectManager",
                        "GetManagedObjects")
    objects = r["body"][0]
    assert world.fs_path() in objects
    props = objects[world.fs_path()][FILESYSTEM_IFACE]
    assert props["Uuid"] == world.fs.uuid


def test_mount_and_unmount_emit_interfaces_added_and_removed(world: World) -> None:
    from dbus_fast import BusType, Message, MessageType
    from dbus_fast.aio import MessageBus

    async def scenario() -> list[tuple[str, Any]]:
        bus = await MessageBus(bus_type=BusType.SYSTEM, bus_address=world.sb.address).connect()
        seen: list[tuple[str, Any]] = []
        got = asyncio.Event()

        def on(msg: Message) -> None:
            if msg.message_type == MessageType.SIGNAL and msg.interface == \
                    "org.freedesktop.DBus.ObjectManager" and msg.path == "/org/btrfsd1":
                seen.append((msg.member, msg.body))
                got.set()

        bus.add_message_handler(on)
        await bus.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                               interface="org.freedesktop.DBus", member="AddMatch",
                               signature="s", body=["type='signal',sender='org.btrfsd1'"]))
        fs = await asyncio.to_thread(world.sb.add_filesystem, "300M", "btrfsd-hotplug")
        await asyncio.wait_for(got.wait(), 10)
        got.clear()
        await asyncio.to_thread(fs.destroy)
        world.sb.filesystems.remove(fs)
        await asyncio.wait_for(got.wait(), 10)
        bus.disconnect()
        return seen

    seen = asyncio.run(scenario())
    added = [b for m, b in seen if m == "InterfacesAdded"]
    removed = [b for m, b in seen if m == "InterfacesRemoved"]
    assert added and FILESYSTEM_IFACE in added[0][1]
    assert added[0][1][FILESYSTEM_IFACE]["Label"].value == "btrfsd-hotplug"
    assert removed and removed[0][0] == added[0][0] and removed[0][1] == [FILESYSTEM_IFACE]


def test_busctl_tree_and_call(world: World) -> None:
    env = world.sb.env
    tree = subprocess.run(["busctl", "--system", "tree", "org.btrfsd1"], env=env,
                          capture_output=True, text=True, check=True).stdout
    assert world.fs_path() in tree
    out = subprocess.run(["busctl", "--system", "call", "org.btrfsd1", "/org/btrfsd1",
                          MANAGER_IFACE, "GetFilesystems", "a{sv}", "0"], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert world.fs_path() in out


def test_gdbus_as_unprivileged_user(world: World) -> None:
    from sandbox import TEST_USER

    argv = [*world.sb.as_user(TEST_USER), "gdbus", "call", "--system", "--dest", "org.btrfsd1",
            "--object-path", world.fs_path(), "--method", f"{FILESYSTEM_IFACE}.GetSubvolume",
            str(world.mnt), "{}"]
    out = subprocess.run(argv, env=world.sb.env, capture_output=True, text=True,
                         check=True).stdout
    assert "'id': <uint64 5>" in out
