"""The import rule: bus -> core -> fs, nothing upward; the CLI is a D-Bus client only.

Read from the source (ast), so a lazy import inside a function counts as much as one at
the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "btrfsd"
COMMON = {"errors", "config", "constants", "units", "log", "names", "replies",
          "memory"}
# what each layer may import from the package, besides itself and the common modules
ALLOWED = {
    "fs": set(),
    "core": {"fs"},
    "bus": {"core"},
    # btrfsctl --host speaks the fleet's wire format (fleet/protocol.py, connect.py)
    "cli": {"fleet"},
    "notify": set(),  # btrfsd-notify: a D-Bus client only, like btrfsctl
    "fleet": set(),  # btrfsd-fleet: a D-Bus client of the local btrfsd, never its core
    "common": set(),
    "entry": {"bus"},  # daemon.py, __main__.py: start the D-Bus front end
}


def _layer(module: str) -> str:
    """'btrfsd.core.jobs' -> 'core'; common modules -> 'common'."""
    parts = module.split(".")
    if len(parts) < 2:
        return "package"
    if parts[1] in COMMON:
        return "common"
    if parts[1] in ("daemon", "__main__", "__init__"):
        return "entry"
    return parts[1]


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(rel.parts)


def _imports(path: Path, name: str) -> set[str]:
    """Every btrfsd module ``path`` (the module ``name``) imports, relative imports
    resolved."""
    package = name.rsplit(".", 1)[0] if path.name != "__init__.py" else name
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("btrfsd")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.startswith("btrfsd"):
                # "from .. import constants" names modules, not attributes
                subs = [f"{target}.{a.name}" for a in node.names]
                found |= {s for s in subs if _exists(s)} or {target}
    return found


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").exists() or (PACKAGE / rel).is_dir()


def _violations(path: Path, name: str) -> list[str]:
    here = _layer(name)
    wrong = []
    for target in sorted(_imports(path, name)):
        there = _layer(target)
        if there in (here, "common", "package") or there in ALLOWED.get(here, set()):
            continue
        wrong.append(f"{name} ({here}) imports {target} ({there})")
    return wrong


def test_imports_go_bus_core_fs_and_never_up() -> None:
    wrong = [w for path in sorted(PACKAGE.rglob("*.py"))
             for w in _violations(path, _module_name(path))]
    assert not wrong, "imports against bus -> core -> fs:\n" + "\n".join(wrong)


def test_the_rule_sees_wrong_imports(tmp_path: Path) -> None:
    # the checker must not be blind: upward, skipping and front-end imports are caught
    sample = tmp_path / "x.py"
    sample.write_text("from ..bus import server\nfrom ..fs.subvol import is_subvolume\n"
                      "def late():\n    from btrfsd.cli import main\n")
    assert len(_violations(sample, "btrfsd.core.x")) == 2  # bus and cli; fs is allowed
    assert len(_violations(sample, "btrfsd.bus.x")) == 2  # fs (skips core) and cli
    sample.write_text("from ..core import jobs\n")
    assert _violations(sample, "btrfsd.cli.x")
