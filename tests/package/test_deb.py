"""The Debian package, installed with dpkg into this machine (issue 16).

The package is built by ``scripts/dev deb`` (cached: a second run with the same source
tree takes seconds), installed, looked at, used (D-Bus activation of the installed
btrfsd through the real setuid launch helper, then ``btrfsctl fs list`` on a loop
image), removed and purged; the module's fixture purges it and puts back the polkit
policy file the integration sandbox may have installed, whatever failed. The tests run
in file order: removal and purge come last.

D-Bus activation here: dbus-daemon-launch-helper, the setuid helper a system bus uses,
finds the service file through the *system* bus's configuration
(/usr/share/dbus-1/system.conf, compiled in: it reads the installed
/usr/share/dbus-1/system-services), runs only when the bus's own user (messagebus)
invokes it, and starts the service with a cleared environment whose bus address is the
compiled-in unix:path=/run/dbus/system_bus_socket. So the private bus runs as messagebus
in a mount namespace of its own with a tmpfs on /run/dbus: there it is the system bus at
its usual address, for the helper and the btrfsd it starts, and nothing of the machine's
/run/dbus is touched. Clients outside reach it through /proc/<bus pid>/root.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import pwd
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from debpkg import (
    COMMANDS,
    CONFFILES,
    CONFIG_DIR,
    FILES,
    FLEET_USER,
    PACKAGE,
    STATE_DIR,
    UNIT_DIR,
    SavedFile,
    build_deb,
    file_list,
    is_installed,
    verify_units,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "loopdev-fixtures"))
from sandbox import LoopFs, bus_config, terminate

pytestmark = pytest.mark.package

POLICY = Path("/usr/share/polkit-1/actions/org.btrfsd1.policy")
INSTALLED_DBUS_POLICY = "/usr/share/dbus-1/system.d/org.btrfsd1.conf"
SYSTEM_SERVICES = "/usr/share/dbus-1/system-services"
LAUNCH_HELPER = "/usr/lib/dbus-1.0/dbus-daemon-launch-helper"
VENV = Path("/usr/lib/btrfsd")


@dataclass
class Installed:
    deb: Path
    build_seconds: float
    before: set[str]  # the file list before the install
    saved_policy: SavedFile
    had_fleet_user: bool  # else the package made it, and the test removes it


def run(*argv: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                       **kw)  # type: ignore[call-overload]
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: exit {r.returncode}\n{r.stdout}{r.stderr}")
    return r  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def pkg() -> Iterator[Installed]:
    if os.geteuid() != 0:
        pytest.skip("installing a package needs root")
    if not Path("/usr/bin/dpkg").exists():
        pytest.skip("not a Debian system")
    if is_installed():
        pytest.skip(f"{PACKAGE} is already known to dpkg here ({is_installed()}): not "
                    "this test's to install over or purge")
    deb, took = build_deb()
    before = file_list()
    saved = SavedFile(POLICY)
    had_fleet_user = _user_exists(FLEET_USER)
    try:
        run("dpkg", "-i", str(deb))
        yield Installed(deb, took, before, saved, had_fleet_user)
    finally:
        with contextlib.suppress(Exception):
            run("dpkg", "--purge", PACKAGE, check=False)
        saved.restore()
        saved.discard()
        if not had_fleet_user and _user_exists(FLEET_USER):  # the package made it
            run("userdel", FLEET_USER, check=False)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def test_build_is_cached(pkg: Installed) -> None:
    """A second ``scripts/dev deb`` on the same tree reuses the package."""
    mtime = pkg.deb.stat().st_mtime
    deb, took = build_deb()
    assert deb == pkg.deb and deb.stat().st_mtime == mtime
    assert took < 20, f"the cached build took {took:.1f} s"


def test_files_in_place_with_sane_modes(pkg: Installed) -> None:
    listed = set(run("dpkg", "-L", PACKAGE).stdout.split())
    for path, mode in FILES.items():
        assert path in listed, f"{path} is not in the package"
        st = os.lstat(path)
        assert stat.S_ISREG(st.st_mode), path
        assert stat.S_IMODE(st.st_mode) == mode, f"{path}: {oct(st.st_mode)}, want {oct(mode)}"
        assert (st.st_uid, st.st_gid) == (0, 0), path
    for link, target in COMMANDS.items():
        assert os.path.realpath(link) == target, link
        assert os.access(link, os.X_OK)
    for path in listed:
        if not os.path.lexists(path) or os.path.islink(path):
            continue
        st = os.lstat(path)
        assert not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH), f"{path} is writable by others"
        assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID), f"{path} is setuid/setgid"
        assert (st.st_uid, st.st_gid) == (0, 0), f"{path} is not root's"
    # the units start what the package installs
    for unit in ("btrfsd.service", "btrfsd-schedule@.service"):
        text = Path(UNIT_DIR, unit).read_text()
        exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
        assert os.access(exec_start.split("=", 1)[1].split()[0], os.X_OK), exec_start
    dbus_service = Path(SYSTEM_SERVICES, "org.btrfsd1.service").read_text()
    assert "Exec=/usr/bin/btrfsd" in dbus_service
    assert sorted(run("dpkg-query", "-W", "-f", "${Conffiles}", PACKAGE).stdout.split()[::2]) \
        == CONFFILES
    # the fleet bridge's unit is neither enabled nor started (it needs fleet.toml); its
    # user exists, with no login
    assert not list(Path("/etc/systemd/system").glob("*.wants/btrfsd-fleet.service"))
    assert "ConditionPathExists=/etc/btrfsd/fleet.toml" in Path(
        UNIT_DIR, "btrfsd-fleet.service").read_text()
    fleet = pwd.getpwnam(FLEET_USER)
    assert fleet.pw_uid < 1000 and fleet.pw_shell == "/usr/sbin/nologin", fleet
    # the agent's user unit is shipped but not enabled for every user (autostart runs it)
    assert not list(Path("/etc/systemd/user").glob("*.wants/btrfsd-notify.service"))
    # postinst compiled the venv (prerm removes the pycs again; see the purge test)
    assert any(VENV.rglob("__pycache__/*.pyc"))


def test_units_verify(pkg: Installed) -> None:
    problems = verify_units(UNIT_DIR)
    assert not problems, "systemd-analyze verify:\n" + "\n".join(problems)


def test_lintian_has_no_errors(pkg: Installed) -> None:
    r = run("lintian", "--fail-on", "error", str(pkg.deb), check=False)
    errors = [line for line in r.stdout.splitlines() if line.startswith("E:")]
    assert r.returncode == 0 and not errors, r.stdout + r.stderr


def test_help_man_and_completion(pkg: Installed) -> None:
    assert "subvolume" in run("btrfsctl", "--help").stdout
    assert "--state-dir" in run("btrfsd", "--help").stdout
    env = {**os.environ, "MANPAGER": "cat", "MANWIDTH": "80", "LANG": "C.UTF-8"}
    for prog, text in (("btrfsctl", "subvolume create"), ("btrfsd", "/etc/btrfsd/btrfsd.toml")):
        page = run("man", "8", prog, env=env).stdout
        assert text in page, page[:2000]
    page = run("man", "1", "btrfsd-notify", env=env).stdout
    assert "--open-command" in page and "read-all" in page, page[:2000]
    assert "--settle" in run("btrfsd-notify", "--help").stdout
    page = run("man", "8", "btrfsd-fleet", env=env).stdout
    assert "fleet.toml" in page and "--config" in page, page[:2000]
    roff = gzip.decompress(Path("/usr/share/man/man8/btrfsctl.8.gz").read_bytes()).decode()
    assert roff.startswith('.TH BTRFSCTL "8"')
    complete = ("source /usr/share/bash-completion/completions/btrfsctl; "
                "COMP_WORDS=(btrfsctl sub); COMP_CWORD=1; COMP_LINE='btrfsctl sub'; "
                "COMP_POINT=${#COMP_LINE}; _shtab_btrfsctl btrfsctl sub btrfsctl; "
                'echo "${COMPREPLY[@]}"')
    assert "subvolume" in run("bash", "-c", complete).stdout.split()


@pytest.fixture
def loop_fs() -> Iterator[LoopFs]:
    work = Path(tempfile.mkdtemp(prefix="btrfsd-pkgtest-"))
    os.chmod(work, 0o755)
    fs = LoopFs(work / "img", work / "mnt")
    try:
        fs.create("1G", label="btrfsd-pkgtest")
        yield fs
    finally:
        fs.destroy()
        with contextlib.suppress(OSError):
            fs.mount_point.rmdir()
            work.rmdir()


def _pid_of(name: str, address: str) -> int | None:
    r = run("busctl", f"--address={address}", "call", "org.freedesktop.DBus",
            "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetConnectionUnixProcessID",
            "s", name, check=False)
    return int(r.stdout.split()[1]) if r.returncode == 0 else None


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def test_dbus_activation_starts_the_installed_daemon(pkg: Installed, loop_fs: LoopFs) -> None:
    try:
        pwd.getpwnam("messagebus")
    except KeyError:
        pytest.skip("no messagebus user (the dbus package makes it)")
    work = Path(tempfile.mkdtemp(prefix="btrfsd-pkgbus-"))
    os.chmod(work, 0o755)
    conf = work / "bus.conf"
    # the sandbox's bus (default policy, PolicyKit reachable) with the installed btrfsd
    # policy, the installed activation files and the real helper, run as messagebus
    conf.write_text(bus_config(
        "/run/dbus/system_bus_socket", SYSTEM_SERVICES, INSTALLED_DBUS_POLICY,
        extra=f"  <user>messagebus</user>\n  <servicehelper>{LAUNCH_HELPER}</servicehelper>\n"))
    os.chmod(conf, 0o644)
    log = open(work / "bus.log", "wb")  # noqa: SIM115
    bus = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "slave", "--", "sh", "-c",
         "mount -t tmpfs -o mode=0755 btrfsd-pkgtest /run/dbus && "
         f"exec dbus-daemon --config-file={conf} --nofork"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    log.close()
    address = f"unix:path=/proc/{bus.pid}/root/run/dbus/system_bus_socket"
    env = {k: v for k, v in os.environ.items() if k != "DBUS_SESSION_BUS_ADDRESS"}
    env["DBUS_SYSTEM_BUS_ADDRESS"] = address
    daemon_pid: int | None = None
    try:
        deadline = time.monotonic() + 10
        while not Path(f"/proc/{bus.pid}/root/run/dbus/system_bus_socket").exists():
            assert bus.poll() is None and time.monotonic() < deadline, \
                (work / "bus.log").read_text()
            time.sleep(0.02)
        assert _pid_of("org.btrfsd1", address) is None, "btrfsd runs before any call"
        r = run("btrfsctl", "--json", "fs", "list", env=env, check=False, timeout=60)
        blog = (work / "bus.log").read_text(errors="replace")
        assert r.returncode == 0, f"{r.stdout}{r.stderr}\n--- bus and btrfsd log ---\n{blog}"
        assert str(loop_fs.mount_point) in r.stdout, r.stdout
        assert "using servicehelper" in blog and "Successfully activated" in blog, blog
        daemon_pid = _pid_of("org.btrfsd1", address)
        assert daemon_pid is not None
        cmdline = Path(f"/proc/{daemon_pid}/cmdline").read_text().split("\0")
        assert cmdline[:2] == ["/usr/lib/btrfsd/bin/python", "/usr/bin/btrfsd"], cmdline
        assert STATE_DIR.is_dir(), "the activated btrfsd did not make its state directory"
    finally:
        if daemon_pid is None:
            daemon_pid = _pid_of("org.btrfsd1", address)
        terminate(bus)
        # btrfsd exits when it loses the bus; a stuck one must not outlive the test
        if daemon_pid is not None and not _gone(daemon_pid, 10):
            with contextlib.suppress(ProcessLookupError):
                os.kill(daemon_pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            for f in work.iterdir():
                f.unlink()
            work.rmdir()


def test_remove_keeps_configuration_and_state(pkg: Installed) -> None:
    # what btrfsd itself writes there (schedules, job state) stays too
    STATE_DIR.mkdir(mode=0o755, exist_ok=True)
    (STATE_DIR / "pkgtest-state").write_text("x")
    (CONFIG_DIR / "schedules.json").write_text("{}")
    run("dpkg", "--remove", PACKAGE)
    assert is_installed() == "deinstall ok config-files"
    assert (CONFIG_DIR / "btrfsd.toml").is_file()
    assert (CONFIG_DIR / "schedules.json").is_file()
    assert (STATE_DIR / "pkgtest-state").is_file()
    for gone in (*COMMANDS, "/usr/lib/btrfsd", INSTALLED_DBUS_POLICY, f"{UNIT_DIR}/btrfsd.service"):
        assert not os.path.lexists(gone), f"{gone} is left after remove"


def test_purge_leaves_nothing_behind(pkg: Installed) -> None:
    run("dpkg", "--purge", PACKAGE)
    assert is_installed() == ""
    pkg.saved_policy.restore()  # the integration sandbox's copy, if it had one
    # a purge keeps the system user (Debian's way: files may still be its); this
    # machine is not the test's to leave it on
    assert _user_exists(FLEET_USER)
    if not pkg.had_fleet_user:
        run("userdel", FLEET_USER)
    after = file_list()
    added = sorted(after - pkg.before)
    removed = sorted(pkg.before - after)
    assert not added and not removed, f"left behind: {added[:40]}\nmissing: {removed[:40]}"
    for path in (CONFIG_DIR, STATE_DIR, VENV, *COMMANDS):
        assert not os.path.lexists(path), path
