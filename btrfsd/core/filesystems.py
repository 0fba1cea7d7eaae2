"""Registry of mounted btrfs filesystems, grouped by UUID, kept current from mountinfo."""

from __future__ import annotations

import asyncio
import logging
import os
import select
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import constants
from ..errors import BtrfsdError, Hint, HintKind, InvalidArgument, NotBtrfs, NotFound, from_errno
from ..fs import mounts as fs_mounts
from ..fs import subvol, sysfs
from ..fs.ioctl import fs_info

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Usage:
    """Space figures of a filesystem, from statvfs on one of its mounts."""

    total_bytes: int = 0
    used_bytes: int = 0
    free_bytes: int = 0


@dataclass
class Filesystem:
    """One mounted btrfs filesystem and every place it is mounted."""

    uuid: str
    mounts: list[fs_mounts.MountEntry]
    label: str = ""
    devices: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    default_subvolume_id: int = constants.TOP_LEVEL_SUBVOLUME_ID
    quota_mode: str = ""  # 'qgroup' (full), 'squota' (simple), '' off

    @property
    def quota_enabled(self) -> bool:
        return bool(self.quota_mode)

    @property
    def mount_points(self) -> list[str]:
        return [m.mount_point for m in self.mounts]

    @property
    def primary_mount(self) -> fs_mounts.MountEntry:
        """The mount closest to the top level: the one to run whole-filesystem calls on."""
        return min(self.mounts, key=lambda m: (m.root.count("/") if m.root != "/" else 0,
                                                len(m.mount_point)))

    def path_of(self, rel: str) -> str | None:
        """Where a path relative to the top level (a listing's path) is reachable in the
        mount tree: under the mount whose root holds it, closest root first; None when
        no mount shows it."""
        inside = "/" + rel.strip("/")
        best: tuple[int, str] | None = None
        for m in self.mounts:
            root = m.root.rstrip("/")
            if inside == root or inside.startswith(root + "/") or root == "":
                rest = inside[len(root):]
                if best is None or len(root) > best[0]:
                    # the mounted root itself is the mount point, not "mount point/"
                    best = (len(root), (m.mount_point.rstrip("/") + rest).rstrip("/") or "/")
        return best[1] if best else None

    def mounted_subvolume_ids(self) -> set[int]:
        return {sid for m in self.mounts if (sid := m.subvolume_id) is not None}

    def refresh(self) -> None:
        """Re-read label, devices, space, default subvolume and quota state (blocking)."""
        self.label = sysfs.read_label(self.uuid)
        self.devices = ["/dev/" + d for d in sysfs.device_names(self.uuid)]
        self.quota_mode = sysfs.quota_mode(self.uuid)
        mp = self.primary_mount.mount_point
        try:
            st = os.statvfs(mp)
            self.usage = Usage(
                total_bytes=st.f_blocks * st.f_frsize,
                used_bytes=(st.f_blocks - st.f_bfree) * st.f_frsize,
                free_bytes=st.f_bavail * st.f_frsize,
            )
            fd = os.open(mp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                self.default_subvolume_id = subvol.default_subvolume_id(fd)
            finally:
                os.close(fd)
        except (OSError, BtrfsdError) as e:
            # A mount can vanish between mountinfo and here; the watcher will catch up.
            log.debug("refresh of %s at %s failed: %s", self.uuid, mp, e)


def open_mount(fs: Filesystem) -> int:
    """Open the filesystem's primary mount point for ioctls (blocking). Raises BtrfsdError."""
    mp = fs.primary_mount.mount_point
    try:
        return os.open(mp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise from_errno(e.errno or 0, f"Cannot open {mp}: {e.strerror}.") from None


def _fsid_for_mount(m: fs_mounts.MountEntry, by_device: dict[str, str]) -> str | None:
    dev = os.path.basename(os.path.realpath(m.source)) if m.source.startswith("/") else ""
    if dev in by_device:
        return by_device[dev]
    # Fallback for sources sysfs does not name (e.g. a path that changed): ask the kernel.
    try:
        fd = os.open(m.mount_point, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return fs_info(fd).fsid
    except OSError:
        return None
    finally:
        os.close(fd)


def scan() -> dict[str, Filesystem]:
    """Read mountinfo and sysfs and return the mounted btrfs filesystems by UUID (blocking)."""
    by_device = sysfs.device_to_fsid()
    found: dict[str, Filesystem] = {}
    for m in fs_mounts.read_btrfs_mounts():
        fsid = _fsid_for_mount(m, by_device)
        if fsid is None:
            continue
        found.setdefault(fsid, Filesystem(uuid=fsid, mounts=[])).mounts.append(m)
    return found


Listener = Callable[[list["Filesystem"], list["Filesystem"]], None]


class Registry:
    """The filesystems btrfsd serves; notifies listeners of mounts coming and going."""

    def __init__(self) -> None:
        self._filesystems: dict[str, Filesystem] = {}
        self._listeners: list[Listener] = []
        self._epoll: select.epoll | None = None
        self._mountinfo_fd: int | None = None
        # At most one rescan runs and one waits: the waiting one (a future every caller
        # and mount event since the running one started shares) covers them all.
        self._rescan_task: asyncio.Task[None] | None = None
        self._rescan_next: asyncio.Future[None] | None = None
        self._rescan_next_from_event = False

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(added, removed)`` after every change of the set of filesystems."""
        self._listeners.append(listener)

    def all(self) -> list[Filesystem]:
        return sorted(self._filesystems.values(), key=lambda f: f.uuid)

    def get(self, uuid: str) -> Filesystem:
        """Return a filesystem by UUID. Raises NotFound if it is not mounted."""
        try:
            return self._filesystems[uuid]
        except KeyError:
            raise NotFound(f"No btrfs filesystem with UUID {uuid} is mounted.") from None

    def by_fsid(self, fsid: str, path: str) -> Filesystem:
        """Return the filesystem a resolved path lies on. Raises NotBtrfs."""
        try:
            return self._filesystems[fsid]
        except KeyError:
            raise NotBtrfs(
                f"{path} is on btrfs filesystem {fsid}, which btrfsd does not see mounted."
            ) from None

    async def rescan(self) -> None:
        """Re-read mountinfo, refresh every filesystem and notify listeners of changes.

        Returns once a rescan that started after this call has finished; concurrent
        callers share one. Raises what that rescan raised (OSError, BtrfsdError).
        """
        # shielded: a caller that gives up must not cancel the rescan others wait for
        await asyncio.shield(self._request_rescan(from_event=False))

    def _request_rescan(self, *, from_event: bool) -> asyncio.Future[None]:
        """The future of the next rescan to start, starting the runner if it is idle."""
        if self._rescan_next is None:
            self._rescan_next = asyncio.get_running_loop().create_future()
        self._rescan_next_from_event |= from_event
        if self._rescan_task is None:
            self._rescan_task = asyncio.get_running_loop().create_task(self._run_rescans())
        return self._rescan_next

    async def _run_rescans(self) -> None:
        # Ends when no rescan waits; no await between that test and clearing the task,
        # so a request always finds either a runner that will see it or none.
        try:
            while (done := self._rescan_next) is not None:
                from_event = self._rescan_next_from_event
                self._rescan_next, self._rescan_next_from_event = None, False
                try:
                    await self._rescan_once()
                except asyncio.CancelledError:
                    done.cancel()
                    raise
                except Exception as e:
                    if from_event:  # nobody else hears of it; the next event retries
                        log.error("rescan after a mount change failed: %s", e)
                    done.set_exception(e)
                    done.exception()  # marks it seen: there may be no caller to await it
                else:
                    done.set_result(None)
        finally:
            self._rescan_task = None
            if self._rescan_next is not None:  # only when cancelled: release the waiters
                self._rescan_next.cancel()
                self._rescan_next = None

    async def _rescan_once(self) -> None:
        found = await asyncio.to_thread(_scan_and_refresh)
        old = self._filesystems
        added = [fs for u, fs in found.items() if u not in old]
        removed = [fs for u, fs in old.items() if u not in found]
        for u, fs in found.items():
            if u in old:
                # keep the object that bus adapters hold; update it in place
                cur = old[u]
                cur.mounts, cur.label, cur.devices = fs.mounts, fs.label, fs.devices
                cur.usage, cur.quota_mode = fs.usage, fs.quota_mode
                cur.default_subvolume_id = fs.default_subvolume_id
                found[u] = cur
        self._filesystems = found
        for fs in added:
            log.info("filesystem appeared uuid=%s mounts=%s", fs.uuid, fs.mount_points)
        for fs in removed:
            log.info("filesystem gone uuid=%s", fs.uuid)
        for listener in self._listeners:
            listener(added, removed)

    def start_watching(self, loop: asyncio.AbstractEventLoop) -> None:
        """Rescan whenever the mount table changes (mountinfo signals EPOLLPRI)."""
        self._mountinfo_fd = os.open(fs_mounts.MOUNTINFO, os.O_RDONLY | os.O_CLOEXEC)
        self._epoll = select.epoll()
        self._epoll.register(self._mountinfo_fd, select.EPOLLPRI | select.EPOLLERR)
        loop.add_reader(self._epoll.fileno(), self._on_mount_change, loop)

    def _on_mount_change(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self._epoll is not None and self._mountinfo_fd is not None
        self._epoll.poll(0)
        # mountinfo must be re-read from the start to clear the pending event.
        os.lseek(self._mountinfo_fd, 0, os.SEEK_SET)
        while os.read(self._mountinfo_fd, 65536):
            pass
        # joins the waiting rescan if there is one: a burst of mounts is one or two scans
        self._request_rescan(from_event=True)

    def stop_watching(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._epoll is not None:
            loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
            self._epoll = None
        if self._mountinfo_fd is not None:
            os.close(self._mountinfo_fd)
            self._mountinfo_fd = None

    def check_member(self, fs: Filesystem, fsid: str, path: str) -> None:
        """Raise InvalidArgument unless the path with ``fsid`` belongs to ``fs``."""
        if fsid != fs.uuid:
            raise InvalidArgument(
                f"{path} is on filesystem {fsid}, not on {fs.uuid}.",
                hint=Hint(HintKind.OTHER_FILESYSTEM, {"filesystem": fsid, "path": path}))


def _scan_and_refresh() -> dict[str, Filesystem]:
    found = scan()
    for fs in found.values():
        fs.refresh()
    return found
