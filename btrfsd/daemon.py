"""The btrfsd entry point (console script ``btrfsd`` and ``python -m btrfsd``)."""

from __future__ import annotations

import argparse
import faulthandler
import gc
import importlib
import logging
import os
import resource
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import log as logsetup
from . import memory
from .constants import VERSION

if TYPE_CHECKING:
    from . import config


def leave_out_openssl() -> None:
    """Keep OpenSSL out of the daemon: it talks D-Bus over a Unix socket and hashes only
    for its own bookkeeping, which Python's built-in hash modules do. Must run before
    asyncio is imported (asyncio imports ssl if it can); in a program that imported any
    of them already (the tests) it leaves everything as it is. Raises nothing."""
    # Not loading libssl/libcrypto saves ~4.7 MiB of RSS (3 MiB of it libcrypto's pages)
    # and keeps a big library the daemon never needs out of a root process.
    if any(name in sys.modules for name in ("asyncio", "ssl", "_hashlib")):
        return
    for name in ("ssl", "_ssl", "_hashlib"):  # an import of these raises ImportError,
        sys.modules[name] = None  # type: ignore[assignment]  # which asyncio, hashlib
        # and hmac allow for


def defer_package_metadata() -> None:
    """Keep ``importlib.metadata`` (and the email package it reads metadata with) out of
    the idle daemon. pydantic imports its ``entry_points`` at start, to find plugins;
    btrfsd turns those off (PYDANTIC_DISABLE_PLUGINS: no code from other packages' entry
    points in a root daemon), so pydantic never calls it. A stand-in module answers
    ``entry_points`` and any other name by importing the real module then. Must run
    before pydantic is imported; where the module is loaded already (the tests) it leaves
    it as it is. Raises nothing."""
    # ~1.2 MiB of RSS and 34 modules at start (issue 11: idle RSS under 35 MiB)
    os.environ["PYDANTIC_DISABLE_PLUGINS"] = "__all__"
    if "importlib.metadata" in sys.modules:
        return
    stand_in = types.ModuleType("importlib.metadata", "Loaded when first used.")

    def real() -> types.ModuleType:
        if sys.modules.get("importlib.metadata") is stand_in:
            del sys.modules["importlib.metadata"]
        return importlib.import_module("importlib.metadata")

    def entry_points(**params: Any) -> Any:
        return real().entry_points(**params)

    def module_getattr(name: str) -> Any:
        if name.startswith("__"):  # the import system asks for __path__ and the like
            raise AttributeError(name)
        return getattr(real(), name)

    stand_in.entry_points = entry_points  # type: ignore[attr-defined]
    setattr(stand_in, "__getattr__", module_getattr)  # noqa: B010 (a module's hook)
    sys.modules["importlib.metadata"] = stand_in
    setattr(importlib, "metadata", stand_in)  # noqa: B010 (as an import would set it)


async def _serve(settings: config.Settings) -> None:
    from .bus.server import Server  # imported late so --help works without the bus stack

    # Everything imported so far lives as long as the process: keep it out of the cyclic
    # collector's full passes, which a 10,000-entry listing triggers several times.
    gc.freeze()
    # Fewer young-generation passes: a listing allocates ~100,000 objects that all live
    # until the reply is sent, and each pass would walk them again for nothing.
    gc.set_threshold(10_000, 10, 10)
    await Server(settings).run()


def raise_fd_limit(log: logging.Logger) -> None:
    """Raise the soft limit of open files to the hard one. Raises nothing: on failure
    the daemon runs with the limit it has."""
    # Every filesystem, running job, caller connection and state write holds descriptors,
    # and the usual soft limit (1024) is far below what the hard limit allows. The daemon
    # spawns nothing and polls with epoll, never select(), so no descriptor it opens
    # needs to stay below 1024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        # the kernel refuses a limit above fs.nr_open, and "unlimited" is above it
        try:
            target = int(Path("/proc/sys/fs/nr_open").read_text())
        except (OSError, ValueError):
            target = soft
    if soft == resource.RLIM_INFINITY or soft >= target:
        log.debug("open files limit %d (hard %d): nothing to raise", soft, hard)
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as e:
        log.debug("open files limit stays %d (hard %d): %s", soft, hard, e)
    else:
        log.debug("open files limit raised from %d to %d (hard %d)", soft, target, hard)


def build_parser() -> argparse.ArgumentParser:
    """The daemon's command line (also the source of its man page and completion)."""
    parser = argparse.ArgumentParser(prog="btrfsd", description="Btrfs management service")
    parser.add_argument("--config", type=Path, help="TOML settings file")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", choices=["text", "json"])
    parser.add_argument("--state-dir", type=Path, help="job state directory (/var/lib/btrfsd)")
    parser.add_argument("--config-dir", type=Path, help="schedules directory (/etc/btrfsd)")
    parser.add_argument("--version", action="version", version=f"btrfsd {VERSION}")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the daemon; return the process exit code."""
    args = build_parser().parse_args(argv)
    leave_out_openssl()  # before config: pydantic imports hashlib (through secrets)
    defer_package_metadata()  # before config too: pydantic imports importlib.metadata
    from . import config

    try:
        settings, problems = config.load_settings(
            args.config, log_level=args.log_level, log_format=args.log_format,
            state_dir=args.state_dir, config_dir=args.config_dir)
    except config.ConfigError as e:
        print(f"btrfsd: bad configuration: {e}", file=sys.stderr)
        return 2
    logsetup.setup(settings.log_level, settings.log_format)
    # A crash in a C extension (btrfsutil, ioctls) should leave a Python stack in the log.
    faulthandler.enable()
    log = logging.getLogger("btrfsd")
    for problem in problems:  # parts of [quota_alerts] left out; the rest is in use
        log.error("configuration: %s", problem)
    if os.geteuid() != 0:
        log.error("btrfsd must run as root (it manages filesystems); uid=%d", os.geteuid())
        return 1
    raise_fd_limit(log)
    memory.tune()  # before any thread exists (its arena is handed out at its first malloc)
    import asyncio  # only here: see leave_out_openssl

    try:
        asyncio.run(_serve(settings))
    except Exception as e:  # startup failures: say what to do, not a traceback
        log.error("cannot serve: %s: %s (is the system bus running, and does the D-Bus policy "
                  "in /usr/share/dbus-1/system.d allow root to own org.btrfsd1?)",
                  type(e).__name__, e)
        log.debug("details", exc_info=True)
        return 1
    return 0
