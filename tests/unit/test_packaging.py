"""The Debian packaging's files agree with the code (cheap checks; tests/package and
tests/system/test_deb_box.py build and install the package itself)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from btrfsd import config
from btrfsd.constants import VERSION

REPO = Path(__file__).resolve().parents[2]
DEBIAN = REPO / "debian"


def test_shipped_settings_file_changes_nothing_and_documents_every_key() -> None:
    shipped = DEBIAN / "btrfsd.toml"
    settings, problems = config.load_settings(shipped)
    assert settings == config.Settings() and not problems
    # every commented-out line is the default: uncommented, the file still changes nothing
    text = re.sub(r"(?m)^# (?=[a-z_]+ = |\[[a-z_]+\])", "", shipped.read_text())
    text = "\n".join(line for line in text.splitlines() if not line.startswith("overrides"))
    values = tomllib.loads(text)
    assert config.Settings.model_validate(values) == config.Settings()
    assert set(values) == set(config.Settings.model_fields)


def test_versions_agree() -> None:
    changelog = (DEBIAN / "changelog").read_text().splitlines()[0]
    deb_version = re.match(r"btrfsd \(([^)]+)\)", changelog)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert deb_version and deb_version.group(1) == pyproject["project"]["version"] == VERSION


def test_lock_covers_every_dependency_within_its_bounds() -> None:
    pins = dict(re.findall(r"(?m)^([A-Za-z0-9_.-]+)==(\S+)",
                           (DEBIAN / "requirements.txt").read_text()))
    norm = {re.sub(r"[-_.]+", "-", k).lower(): v for k, v in pins.items()}
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    for dep in pyproject["project"]["dependencies"]:
        name = re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", dep).group(0)).lower()  # type: ignore[union-attr]
        assert name in norm, f"{dep} is not pinned in debian/requirements.txt"
    assert tuple(int(x) for x in norm["btrfsutil"].split(".")[:2]) < (6, 14)
    assert norm["pydantic"].startswith("2.") and norm["dbus-fast"].startswith("5.")
    assert "--hash=sha256:" in (DEBIAN / "requirements.txt").read_text()
