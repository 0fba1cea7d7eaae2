"""Helpers every benchmark script shares: timing, percentiles, RSS, the root check."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "loopdev-fixtures"))
from sandbox import Sandbox


def pct(samples: list[float], p: float) -> float:
    """The p-th percentile of seconds, in milliseconds."""
    s = sorted(samples)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))] * 1000


def timed(n: int, fn: Callable[[int], object]) -> list[float]:
    """Seconds of each of n calls fn(0) .. fn(n-1)."""
    return [wall(lambda i=i: fn(i)) for i in range(n)]


def wall(fn: Callable[[], object]) -> float:
    """Seconds one call of fn takes."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def rss_kib(pid: int) -> int:
    return rss_parts(pid).get("VmRSS", 0)


def rss_parts(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile and RssShmem of a process, in KiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            found[key] = int(value.split()[0])
    return found


def slope(xs: list[float], ys: list[float]) -> float:
    """The least-squares slope of ys over xs (0 with fewer than two points)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def is_root() -> bool:
    """True as root; otherwise says so on stderr (benchmarks need loop devices)."""
    if os.geteuid() == 0:
        return True
    print("run as root", file=sys.stderr)
    return False


@contextlib.contextmanager
def bench_sandbox(config: str = "") -> Iterator[Sandbox]:
    """A quiet sandbox without its default filesystem (each benchmark makes its own);
    this process's D-Bus clients talk to the sandbox's bus. ``config``: btrfsd.toml text
    (to measure a setting against its default in the same way)."""
    with Sandbox(daemon_args=["--log-level", "warning"], config=config) as sb:
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = sb.address
        sb.filesystems[0].destroy()
        sb.filesystems.clear()
        yield sb
