"""Write the introspection XML of btrfsd's interfaces (docs/interfaces/*.xml).

Run ``python -m btrfsd.bus.introspect docs/interfaces`` after changing the API;
tests/integration/test_bus.py checks the running daemon against these files.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import cast

from dbus_fast.service import ServiceInterface

from ..core.filesystems import Filesystem
from ..core.jobs import Job
from ..core.service import Service
from .filesystem import FilesystemInterface
from .job import JobInterface
from .manager import ManagerInterface

HEADER = ('<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
          ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n')


# Interfaces only need the service when called; introspection never calls them.
NO_SERVICE = cast(Service, None)


def interfaces() -> list[ServiceInterface]:
    """One instance of each exported interface, built without a bus or filesystems."""
    fs = Filesystem(uuid="00000000-0000-0000-0000-000000000000", mounts=[])
    job = Job(id=0, operation="scrub", filesystem=fs.uuid, started_by_uid=0)
    return [
        ManagerInterface(None, NO_SERVICE),  # type: ignore[arg-type]
        FilesystemInterface(None, fs, NO_SERVICE),  # type: ignore[arg-type]
        JobInterface(None, job, None),  # type: ignore[arg-type]
    ]


def write(directory: Path) -> list[Path]:
    """Write one <node> file per interface into ``directory``; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for iface in interfaces():
        node = ET.Element("node")
        node.append(iface.introspect().to_xml())
        ET.indent(node)
        path = directory / f"{iface.name}.xml"
        path.write_text(HEADER + ET.tostring(node, encoding="unicode") + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/interfaces")):
        print(p)
