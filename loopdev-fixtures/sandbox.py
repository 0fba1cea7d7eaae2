"""A throw-away btrfsd world with real parts: loop-mounted btrfs images, a private
system-like dbus-daemon whose config includes the project's dbus-policy/ file, the real
polkitd with the project's .policy installed, test users, and btrfsd itself.

polkitd is started by the sandbox (start_polkitd), so a test that stops it sees polkit
unreachable. ``offer_polkit_activation`` lets the bus start polkitd on demand instead, as
a system bus does under systemd, where polkit.service is static and only D-Bus
activation starts it.

Used by the test suite (tests/conftest.py) and by the demo (``python sandbox.py demo``).
Everything it makes is removed on exit, including after a failure.
Needs root, Debian 12 packages btrfs-progs, dbus, polkitd, and a venv with btrfsd installed.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
POLICY_SRC = REPO / "polkit-actions" / "org.btrfsd1.policy"
RULES_SRC = REPO / "polkit-actions" / "50-btrfsd-admin.rules.example"
DBUS_POLICY = REPO / "dbus-policy" / "org.btrfsd1.conf"
POLKIT_ACTIONS_DIR = Path("/usr/share/polkit-1/actions")
POLKIT_RULES_DIR = Path("/etc/polkit-1/rules.d")
POLKITD = "/usr/lib/polkit-1/polkitd"
POLKIT_NAME = "org.freedesktop.PolicyKit1"
BUS_NAME = "org.btrfsd1"
# What Debian's /usr/share/dbus-1/system-services/org.freedesktop.PolicyKit1.service says,
# less SystemdService= (no systemd here). The private bus has no <servicehelper> (the
# setuid dbus-daemon-launch-helper reads service files only from the system's fixed
# directories), so dbus-daemon, running as root, starts the Exec line itself and User= is
# not used; polkitd drops to its own user as under systemd.
POLKIT_SERVICE = """[D-BUS Service]
Name={name}
Exec={exec_line}
User=root
"""

ADMIN_GROUP = "btrfsd-admin"  # the group the example rules file grants everything
TEST_USER = "btrfsd-tuser"  # unprivileged: polkit defaults apply
TEST_ADMIN = "btrfsd-tadmin"  # member of ADMIN_GROUP

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <!-- empty unless a test offers polkit activation; looked up again on each activation -->
  <servicedir>{service_dir}</servicedir>
{extra}  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Peer"/>
    <allow send_destination="org.freedesktop.PolicyKit1"/>
  </policy>
  <policy user="polkitd">
    <allow own="org.freedesktop.PolicyKit1"/>
  </policy>
  <include>{project_policy}</include>
</busconfig>
"""


def bus_config(socket: Path | str, service_dir: Path | str, project_policy: Path | str,
               extra: str = "") -> str:
    """The private system-like bus's configuration: listening at ``socket``, activating
    services from ``service_dir``, with ``project_policy`` (btrfsd's D-Bus policy file)
    included; ``extra`` is more busconfig elements (e.g. a <user> and a <servicehelper>,
    as tests/package uses to activate the installed package's btrfsd). Raises nothing."""
    return BUS_CONFIG.format(socket=socket, service_dir=service_dir,
                             project_policy=project_policy, extra=extra)


def log(msg: str) -> None:
    print(f"[sandbox] {msg}", file=sys.stderr, flush=True)


def run(*cmd: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, text=True, capture_output=True, **kw)  # type: ignore[call-overload, no-any-return]


def terminate(proc: subprocess.Popen[Any], timeout: float = 10) -> int | None:
    """SIGTERM a process that still runs, wait ``timeout`` seconds, then kill it; return
    its exit code. Raises nothing for a process that has already ended."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def venv_bin(name: str) -> str:
    """Path of a console script next to the running interpreter (the venv's bin/)."""
    return str(Path(sys.executable).parent / name)


@dataclass
class LoopFs:
    """A sparse image file, its loop device and its btrfs mount."""

    image: Path
    mount_point: Path
    device: str = ""

    def create(self, size: str = "1G", label: str = "") -> None:
        run("truncate", "-s", size, str(self.image))
        args = ["mkfs.btrfs", "-q", "-f"] + (["-L", label] if label else []) + [str(self.image)]
        run(*args)
        self.device = run("losetup", "-f", "--show", str(self.image)).stdout.strip()
        self.mount_point.mkdir(parents=True, exist_ok=True)
        run("mount", "-t", "btrfs", self.device, str(self.mount_point))
        # Tests let unprivileged users look (they may read, never change).
        os.chmod(self.mount_point, 0o755)

    @property
    def uuid(self) -> str:
        return run("blkid", "-s", "UUID", "-o", "value", self.device).stdout.strip()

    def destroy(self) -> None:
        if (self.mount_point.is_mount()
                and run("umount", str(self.mount_point), check=False).returncode != 0):
            run("umount", "-l", str(self.mount_point), check=False)
        if self.device:
            run("losetup", "-d", self.device, check=False)
            self.device = ""
        with contextlib.suppress(FileNotFoundError):
            self.image.unlink()


@dataclass
class Sandbox:
    """The whole world; use ``with Sandbox() as sb:``."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="btrfsd-sb-")))
    daemon_args: list[str] = field(default_factory=lambda: ["--log-level", "debug"])
    config: str = ""  # btrfsd.toml text for the daemon (written into the workdir)
    filesystems: list[LoopFs] = field(default_factory=list)
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # False for a second sandbox beside one that made the test users (tests/integration/
    # test_fleet.py: hosts of a fleet): making them again would change their uids
    create_test_users: bool = True
    # When set, btrfsd runs in a mount namespace of its own where the first filesystem is
    # also mounted at this (existing, empty) directory: one host of a simulated fleet,
    # where the same path names each host's own filesystem. Later host mounts still
    # propagate into it.
    private_mount: str = ""
    _activation_offered: bool = False
    _cleanup: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    # -- set-up --------------------------------------------------------------------
    def __enter__(self) -> Sandbox:
        try:
            os.chmod(self.workdir, 0o755)  # unprivileged callers must reach the bus socket
            self._cleanup.callback(shutil.rmtree, self.workdir, ignore_errors=True)
            self.start_bus()
            self.install_polkit_files()
            self.start_polkitd()
            if self.create_test_users:
                self.create_users()
            self.add_filesystem()
            self.start_daemon()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._activation_offered:  # while the bus can still say who polkitd is
            self.withdraw_polkit_activation()
        for name in list(self._procs):
            self.stop(name)
        for fs in reversed(self.filesystems):
            fs.destroy()
        self.filesystems.clear()
        self._cleanup.close()

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    @property
    def socket(self) -> Path:
        return self.workdir / "bus" / "socket"

    @property
    def service_dir(self) -> Path:
        return self.workdir / "services"

    @property
    def address(self) -> str:
        return f"unix:path={self.socket}"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("DBUS_SESSION_BUS_ADDRESS",)}
        env["DBUS_SYSTEM_BUS_ADDRESS"] = self.address
        return env

    def start_bus(self) -> None:
        (self.workdir / "bus").mkdir(mode=0o755)
        self.service_dir.mkdir(mode=0o755)
        conf = self.workdir / "bus.conf"
        conf.write_text(bus_config(self.socket, self.service_dir, DBUS_POLICY))
        self._spawn("dbus-daemon", ["dbus-daemon", f"--config-file={conf}", "--nofork"])
        self._wait(lambda: self.socket.exists(), "dbus-daemon socket")

    def _backup_and_install(self, src: Path, dest: Path) -> Callable[[], None]:
        backup = self.workdir / ("backup-" + dest.name)
        if dest.exists():
            shutil.copy2(dest, backup)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        os.chmod(dest, 0o644)

        def restore() -> None:
            if backup.exists():
                shutil.copy2(backup, dest)
            else:
                dest.unlink(missing_ok=True)

        self._cleanup.callback(restore)
        return restore

    def install_rules(self, name: str, text: str) -> Callable[[], None]:
        """Install a polkit rules file for a test; returns a function that removes it
        (it is also removed when the sandbox closes)."""
        src = self.workdir / name
        src.write_text(text)
        return self._backup_and_install(src, POLKIT_RULES_DIR / name)

    def install_polkit_files(self) -> None:
        self._backup_and_install(POLICY_SRC, POLKIT_ACTIONS_DIR / POLICY_SRC.name)
        self._backup_and_install(RULES_SRC, POLKIT_RULES_DIR / "50-btrfsd-admin.rules")

    def start_polkitd(self) -> None:
        self._spawn("polkitd", [POLKITD, "--no-debug"])
        self.wait_for_name(POLKIT_NAME)

    def offer_polkit_activation(self, exec_line: str = f"{POLKITD} --no-debug"
                                ) -> Callable[[], None]:
        """Let the bus start polkitd (``exec_line``) when a call is sent to its name and
        nobody owns it. Returns withdraw_polkit_activation (closing the sandbox calls it
        too). Stop the sandbox's own polkitd first to see the bus start one.
        """
        path = self.service_dir / f"{POLKIT_NAME}.service"
        path.write_text(POLKIT_SERVICE.format(name=POLKIT_NAME, exec_line=exec_line))
        os.chmod(path, 0o644)
        self._activation_offered = True
        return self.withdraw_polkit_activation

    def withdraw_polkit_activation(self) -> None:
        """Take the activation offer back and stop a polkitd the bus started (the one
        start_polkitd ran is left alone). Raises TimeoutError if it does not go."""
        (self.service_dir / f"{POLKIT_NAME}.service").unlink(missing_ok=True)
        self._activation_offered = False
        pid = self.owner_pid(POLKIT_NAME)
        own = self._procs.get("polkitd")
        if pid is None or (own is not None and own.pid == pid):
            return
        # The bus started it detached (its parent is init), so it is nobody's child here:
        # make sure the pid is still that polkitd before signalling it.
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/exe").resolve() == Path(POLKITD).resolve():
                os.kill(pid, signal.SIGTERM)
        self._wait(lambda: not self.has_owner(POLKIT_NAME) and not _running(pid),
                   "the activated polkitd to exit")

    def owner_pid(self, name: str) -> int | None:
        """Process id of the connection owning ``name`` on the bus, None if unowned."""
        r = run("busctl", f"--address={self.address}", "call", "org.freedesktop.DBus",
                "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetConnectionUnixProcessID",
                "s", name, check=False)
        return int(r.stdout.split()[1]) if r.returncode == 0 else None

    def create_users(self) -> None:
        try:
            grp.getgrnam(ADMIN_GROUP)
            created_group = False
        except KeyError:
            run("groupadd", "--system", ADMIN_GROUP)
            created_group = True
        for user, extra in ((TEST_USER, []), (TEST_ADMIN, ["-G", ADMIN_GROUP])):
            with contextlib.suppress(KeyError):
                pwd.getpwnam(user)
                run("userdel", user, check=False)  # left over from an interrupted run
            run("useradd", "--system", "-M", "-N", "-s", "/usr/sbin/nologin", *extra, user)
            self._cleanup.callback(run, "userdel", user, check=False)
        if created_group:
            # registered last, so it runs after the users are gone
            self._cleanup.callback(run, "groupdel", ADMIN_GROUP, check=False)

    def add_filesystem(self, size: str = "1G", label: str = "") -> LoopFs:
        n = len(self.filesystems)
        fs = LoopFs(self.workdir / f"img{n}", self.workdir / f"mnt{n}")
        self.filesystems.append(fs)
        fs.create(size, label or f"btrfsd-test{n}")
        return fs

    def start_daemon(self) -> None:
        log_file = open(self.workdir / "btrfsd.log", "ab")  # noqa: SIM115
        # job state lives in the sandbox, never in the host's /var/lib/btrfsd
        argv = [venv_bin("btrfsd"), "--state-dir", str(self.state_dir),
                "--config-dir", str(self.workdir / "etc"), *self.daemon_args]
        if self.config:
            conf = self.workdir / "btrfsd.toml"
            conf.write_text(self.config)
            argv += ["--config", str(conf)]
        if self.private_mount:
            argv = ["unshare", "--mount", "--propagation", "slave", "--", "sh", "-c",
                    'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh",
                    str(self.filesystems[0].mount_point), self.private_mount, *argv]
        self._spawn("btrfsd", argv, stderr=log_file)
        log_file.close()
        self.wait_for_name(BUS_NAME)

    def kill_daemon(self) -> None:
        """SIGKILL btrfsd, as an OOM kill or a crash would end it."""
        proc = self._procs.pop("btrfsd")
        proc.kill()
        proc.wait()

    def restart_daemon(self) -> None:
        self.stop("btrfsd")
        self.start_daemon()

    # -- processes -----------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], stderr: object = None) -> None:
        proc = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL,
                                stderr=stderr or subprocess.DEVNULL)  # type: ignore[arg-type]
        self._procs[name] = proc

    def stop(self, name: str) -> int | None:
        proc = self._procs.pop(name, None)
        if proc is None:
            return None
        return terminate(proc)

    def alive(self, name: str) -> bool:
        proc = self._procs.get(name)
        return proc is not None and proc.poll() is None

    def _wait(self, cond: object, what: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():  # type: ignore[operator]
                return
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} while waiting "
                                       f"for {what}; log: {self.daemon_log()[-2000:]}")
            time.sleep(0.02)
        raise TimeoutError(f"timed out waiting for {what}")

    def has_owner(self, name: str) -> bool:
        r = run("busctl", f"--address={self.address}", "status", name, check=False)
        return r.returncode == 0

    def wait_for_name(self, name: str) -> None:
        self._wait(lambda: self.has_owner(name), f"{name} on the bus")

    def daemon_log(self) -> str:
        try:
            return (self.workdir / "btrfsd.log").read_text(errors="replace")
        except OSError:
            return ""

    def as_user(self, user: str) -> list[str]:
        """argv prefix that runs a command as ``user`` with its groups (setpriv)."""
        return ["setpriv", f"--reuid={user}", f"--regid={pwd.getpwnam(user).pw_gid}",
                "--init-groups", "--"]


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for init counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def demo(cockpit: bool = False, port: int = 9091) -> int:
    """Start a sandbox and take a short btrfsctl tour, then tear everything down. With
    ``cockpit``, serve the Cockpit page afterwards on 127.0.0.1:``port`` (as the admin
    test user, against the sandbox's bus) until Ctrl-C."""
    ctl = venv_bin("btrfsctl")
    with Sandbox(daemon_args=["--log-level", "info"]) as sb:
        mnt = str(sb.filesystems[0].mount_point)
        steps = [
            [ctl, "fs", "list"],
            [ctl, "subvolume", "create", f"{mnt}/home"],
            [ctl, "subvolume", "create", f"{mnt}/home/alice"],
            [ctl, "snapshot", f"{mnt}/home"],
            [ctl, "snapshot", f"{mnt}/home", f"{mnt}/home-backup", "--recursive"],
            [ctl, "subvolume", "list", mnt],
            [ctl, "snapshot", "list", f"{mnt}/home"],
            [ctl, "subvolume", "show", f"{mnt}/home-backup"],
            [ctl, "--json", "subvolume", "show", f"{mnt}/home"],
            [ctl, "subvolume", "delete", f"{mnt}/home-backup", "--recursive"],
            [ctl, "scrub", "start", mnt, "--wait"],
            [ctl, "balance", "start", mnt, "--data-usage", "10", "--wait"],
            [ctl, "scrub", "status", mnt],
            [ctl, "jobs"],
            [ctl, "quota", "enable", mnt],
            [ctl, "quota", "set", f"{mnt}/home", "1G", "--exclusive", "512M"],
            [ctl, "quota", "show", mnt, "--sync"],
            [ctl, "schedule", "set", "home", f"{mnt}/home", "--every", "15m", "--hourly", "24",
             "--daily", "7", "--weekly", "4", "--monthly", "12"],
            [ctl, "schedule", "run", "home"],
            [ctl, "schedule", "explain", "home"],
            [ctl, "subvolume", "create", f"{mnt}/../escape"],
        ]
        for argv in steps:
            print(f"\n$ btrfsctl {' '.join(argv[1:])}", flush=True)
            subprocess.run(argv, env=sb.env, check=False)
        print(f"\n$ (as unprivileged user {TEST_USER}) btrfsctl subvolume create {mnt}/nope",
              flush=True)
        subprocess.run([*sb.as_user(TEST_USER), ctl, "subvolume", "create", f"{mnt}/nope"],
                       env=sb.env, check=False)
        print("\nDaemon log (last lines):")
        print("\n".join(sb.daemon_log().splitlines()[-8:]))
        if cockpit:
            serve_cockpit(sb, port)
    return 0


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def serve_cockpit(sb: Sandbox, port: int) -> None:
    """The Cockpit page (cockpit/) on 127.0.0.1:``port`` as TEST_ADMIN until Ctrl-C."""
    from cockpit_session import CockpitSession, available

    missing = available()
    if missing:
        print(f"\n--cockpit: {missing} missing (apt-get install cockpit-ws cockpit-bridge)")
        return
    with CockpitSession(sb, TEST_ADMIN, port=port) as cs:
        mnt = sb.filesystems[0].mount_point
        print(f"\nThe Cockpit page, as {TEST_ADMIN} (allowed everything by polkit's admin rule):"
              f"\n\n    {cs.url}\n\n(only on 127.0.0.1; the filesystem is mounted at {mnt}). "
              "Ctrl-C stops it and removes the sandbox.", flush=True)
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            while cs.alive():
                time.sleep(0.5)
            print(f"cockpit-ws exited: {cs.log()}", file=sys.stderr)
        except KeyboardInterrupt:
            print("\nstopping", flush=True)


@contextlib.contextmanager
def sandbox(**kw: object) -> Iterator[Sandbox]:
    with Sandbox(**kw) as sb:  # type: ignore[arg-type]
        yield sb


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "demo":
        import argparse

        ap = argparse.ArgumentParser(prog="scripts/dev demo")
        ap.add_argument("--cockpit", action="store_true",
                        help="after the tour, serve the Cockpit page on 127.0.0.1 until Ctrl-C")
        ap.add_argument("--port", type=int, default=9091, help="its port (default 9091)")
        args = ap.parse_args(sys.argv[2:])
        sys.exit(demo(cockpit=args.cockpit, port=args.port))
    print("usage: sandbox.py demo [--cockpit [--port N]]", file=sys.stderr)
    sys.exit(2)
