"""btrfsd-fleet: entry point of the fleet bridge (docs/fleet.md)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from .bridge import Bridge, BusUnavailable
from .settings import DEFAULT_BRIDGE_CONFIG, SettingsError, load_bridge

EXIT_CONFIG = 2
EXIT_NO_BUS = 3


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="btrfsd-fleet",
        description="Serve the local btrfsd's API to a fleet over NATS (a D-Bus client of "
        "btrfsd: polkit decides each call as for any other caller).")
    p.add_argument("--config", type=Path, default=None,
                   help=f"settings file (default {DEFAULT_BRIDGE_CONFIG}, if it exists)")
    p.add_argument("--host", default=None, help="this host's name in subjects "
                   "(overrides the settings file; default: the short host name)")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"])
    return p


async def _serve(bridge: Bridge) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, bridge.stop)
    await bridge.run()
    return EXIT_NO_BUS if bridge.bus_lost else 0


def main(argv: list[str] | None = None) -> int:
    """Run the bridge until SIGTERM/SIGINT; the exit code (2 bad settings, 3 no bus or
    the bus went away)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    # nats-py logs every reconnect attempt at error level; its callbacks tell us enough
    logging.getLogger("nats").setLevel(logging.CRITICAL)
    try:
        settings = load_bridge(args.config, args.host)
    except SettingsError as e:
        print(f"btrfsd-fleet: {e}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return asyncio.run(_serve(Bridge(settings)))
    except BusUnavailable as e:
        print(f"btrfsd-fleet: cannot reach the system bus: {e}", file=sys.stderr)
        return EXIT_NO_BUS


if __name__ == "__main__":
    sys.exit(main())
