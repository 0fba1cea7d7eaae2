"""The Cockpit page (cockpit/) in a real browser, on real parts (issue 12).

Debian's cockpit-ws serves the page from this checkout against the sandbox's bus, as a
test user (loopdev-fixtures/cockpit_session.py), and Debian's chromium, headless, driven
by selenium through Debian's chromium-driver (nothing is downloaded), uses it as a person
would: create a subvolume, snapshot it, watch a scrub's bar reach 100%, set and clear a
quota limit, see a denial as the unprivileged user. The page shows only a filesystem made
for this module (index.html#/<uuid>). Screenshots are kept in $BTRFSD_ARTIFACTS
(default /tmp/btrfsd-artifacts), light and dark.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_ADMIN, TEST_USER, World, btrfs, qgroups

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "loopdev-fixtures"))
from cockpit_session import CockpitSession, available, kill_marked
from sandbox import LoopFs

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("BTRFSD_ARTIFACTS", "/tmp/btrfsd-artifacts"))
MiB = 1024 * 1024

pytestmark = pytest.mark.browser


def wait_for(cond: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = cond()
            if value:
                return value
        except Exception as e:  # stale elements while the page re-renders
            last_exc = e
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last error: {last_exc!r})")


class Browser:
    """Headless Debian chromium through chromium-driver; every process it starts carries
    a marker in its environment and is ended on close, whatever happened."""

    def __init__(self) -> None:
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix="btrfsd-chromium-")
        self.marker = f"BTRFSD_TEST_BROWSER={os.path.basename(self.profile)}"
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1280,1000",
                    f"--user-data-dir={self.profile}", "--lang=en-US"):
            opts.add_argument(arg)
        env = dict(os.environ, SE_OFFLINE="true")
        env[self.marker.split("=")[0]] = self.marker.split("=")[1]
        env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        service = Service(CHROMEDRIVER, env=env)
        try:
            self.driver = webdriver.Chrome(options=opts, service=service)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        driver = getattr(self, "driver", None)
        if driver is not None:
            with contextlib.suppress(Exception):
                driver.quit()
        kill_marked(self.marker)
        shutil.rmtree(self.profile, ignore_errors=True)

    # -- the page ------------------------------------------------------------------
    def open(self, url: str) -> None:
        self.driver.get(url)
        wait_for(lambda: self.driver.execute_script("return document.body.dataset.ready"),
                 "the page to connect")

    def text(self) -> str:
        return str(self.driver.find_element(By.TAG_NAME, "body").text)

    def find(self, css: str) -> Any:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def finds(self, css: str) -> list[Any]:
        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def click(self, css: str, within: tuple[str, str] | None = None) -> None:
        """Click an element, found again if the page re-rendered it meanwhile."""
        def attempt() -> bool:
            scope = self.row(*within) if within else self.driver
            scope.find_element(By.CSS_SELECTOR, css).click()
            return True
        wait_for(attempt, f"{css} to be clickable")

    def row(self, kind: str, path: str) -> Any:
        return self.find(f"tr.{kind}[data-path='{path}']")

    def screenshot(self, name: str) -> Path:
        """The whole page (beyond the window) as ARTIFACTS/<name>.png."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        time.sleep(0.3)  # let the bar's transition settle
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        path = ARTIFACTS / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def fill_ratio(self, scope: Any) -> float:
        """How much of a progress bar's track its fill covers, as drawn."""
        track = scope.find_element(By.CSS_SELECTOR, ".progress-bar")
        fill = scope.find_element(By.CSS_SELECTOR, ".progress-fill")
        return float(fill.size["width"]) / float(track.size["width"])

    def set_theme(self, style: str) -> None:
        self.driver.execute_script("localStorage.setItem('shell:style', arguments[0])", style)
        self.driver.refresh()
        wait_for(lambda: self.driver.execute_script("return document.body.dataset.ready"),
                 "the page to connect")


@pytest.fixture(scope="module")
def page_fs(world: World) -> Iterator[LoopFs]:
    """A filesystem of its own for the page, with ~200 MiB of data for a scrub to read."""
    missing = available()
    if missing or not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip(f"needs Debian's cockpit-ws, cockpit-bridge, chromium, chromium-driver "
                    f"({missing or 'chromium'} missing; scripts/dev installs them)")
    fs = world.sb.add_filesystem(label="cockpit-page")
    try:
        subprocess.run(["dd", "if=/dev/urandom", f"of={fs.mount_point}/fill", "bs=1M",
                        "count=200", "status=none"], check=True)
        subprocess.run(["sync", "-f", str(fs.mount_point / "fill")], check=True)
        yield fs
    finally:
        fs.destroy()
        world.sb.filesystems.remove(fs)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    b = Browser()
    try:
        yield b
    finally:
        b.close()


def show_field(path: Path, name: str) -> str:
    """One field of ``btrfs subvolume show``."""
    for line in btrfs("subvolume", "show", str(path)).splitlines():
        key, _, value = line.strip().partition(":")
        if key == name:
            return value.strip()
    raise AssertionError(f"no {name} for {path}")


def page_url(cs: CockpitSession, fs: LoopFs) -> str:
    return f"{cs.url}#/{fs.uuid}"


def test_admin_snapshot_scrub_and_limit(world: World, page_fs: LoopFs, browser: Browser
                                        ) -> None:
    mnt = page_fs.mount_point
    with CockpitSession(world.sb, TEST_ADMIN) as cs:
        browser.open(page_url(cs, page_fs))
        wait_for(lambda: "cockpit-page" in browser.text(), "the filesystem card")
        assert browser.find(".fs-space [role=progressbar]").get_attribute("aria-valuenow")

        # create a subvolume, then snapshot it: the snapshot shows under its source
        browser.find("#new-subvolume").send_keys("data")
        browser.click("button[data-action=create]")
        wait_for(lambda: browser.row("subvolume-row", "data"), "the new subvolume's row")
        browser.click("button[data-action=snapshot]", within=("subvolume-row", "data"))
        snap_path = wait_for(lambda: browser.finds("tr.snapshot-row")[0].get_attribute("data-path"),
                             "the snapshot's row")
        assert snap_path.startswith("data/.snapshots/"), snap_path
        names = wait_for(lambda: [r.get_attribute("data-path")
                                  for r in browser.finds(".fs-subvolumes tbody tr")], "the rows")
        assert names.index(snap_path) == names.index("data") + 1, names  # grouped under it
        listed = btrfs("subvolume", "list", "-r", str(mnt))
        assert snap_path in listed, listed  # real, and read-only
        # read-only toggle on the source, checked with btrfs-progs
        browser.click(".switch", within=("subvolume-row", "data"))
        wait_for(lambda: " path data\n" in btrfs("subvolume", "list", "-r", str(mnt)),
                 "data to become read-only")
        browser.click(".switch", within=("subvolume-row", "data"))
        wait_for(lambda: " path data\n" not in btrfs("subvolume", "list", "-r", str(mnt)),
                 "data to become writable again")

        # a scrub, slowed by the kernel's speed limit: the bar moves, then reaches 100%
        browser.find("#scrub-limit").send_keys("40M")
        browser.click("button[data-action=scrub]")
        job = wait_for(lambda: browser.finds(".job"), "the scrub's job")[0]
        seen: list[float] = []

        def done() -> bool:
            bar = browser.find(".job [role=progressbar]")
            seen.append(float(bar.get_attribute("aria-valuenow")))
            return "job-completed" in browser.find(".job").get_attribute("class")

        wait_for(lambda: (len(seen) > 3 and 0 < seen[-1] < 100) or done(), "the bar to move")
        browser.screenshot("cockpit-scrub-running")
        wait_for(done, "the scrub to complete", timeout=40)
        time.sleep(0.5)  # the bar's width transition; no change comes after the end
        job = browser.find(".job")
        assert float(job.find_element(By.CSS_SELECTOR, "[role=progressbar]")
                     .get_attribute("aria-valuenow")) == 100
        assert any(0 < v < 100 for v in seen), f"no progress seen between 0 and 100: {seen}"
        assert "completed" in job.text
        assert browser.fill_ratio(job) > 0.99
        # ~200 MiB of 1 GiB: the fill was written after the mount, so the figure comes
        # from the daemon's periodic re-read (refresh_interval, 10 s) as PropertiesChanged
        # while the page is open; waiting for it checks the page follows live changes
        wait_for(lambda: 0.05 < browser.fill_ratio(browser.find(".fs-space")) < 0.5,
                 "the space bar to show the ~200 MiB written", timeout=25)
        assert "btrfsd 0.1" in browser.find("#version").text
        assert not browser.finds(".alert-danger"), browser.text()
        wait_for(lambda: "no errors" in browser.find(".fs-last").text, "the last scrub's result")
        browser.screenshot("cockpit-scrub-done")

        # a second, slower scrub: pause, resume and cancel it from its row
        browser.find("#scrub-limit").clear()
        browser.find("#scrub-limit").send_keys("5M")
        browser.click("button[data-action=scrub]")
        wait_for(lambda: browser.finds(".job-running"), "the second scrub to run")
        browser.click(".job-running button[data-action=pause]")
        wait_for(lambda: browser.finds(".job-paused"), "the scrub to pause")
        browser.click(".job-paused button[data-action=resume]")
        wait_for(lambda: browser.finds(".job-running"), "the scrub to resume")
        browser.click(".job-running button[data-action=cancel]")
        wait_for(lambda: browser.finds(".job-cancelled"), "the scrub to be cancelled")

        # delete the snapshot through the confirmation dialog
        browser.click("button[data-action=delete]", within=("snapshot-row", snap_path))
        browser.click("dialog button[data-action=confirm]")
        wait_for(lambda: not browser.finds(f"tr.snapshot-row[data-path='{snap_path}']"),
                 "the snapshot's row to go")
        assert snap_path not in btrfs("subvolume", "list", str(mnt))
        browser.click("button[data-action=snapshot]", within=("subvolume-row", "data"))
        wait_for(lambda: browser.finds("tr.snapshot-row"), "a new snapshot (for the pictures)")

        # quotas: enable, set a limit through the dialog, check it with btrfs-progs, clear
        browser.click("button[data-action=enable-quota]")
        wait_for(lambda: browser.row("quota-row", "data"), "the quota table")
        browser.click("button[data-action=edit-limit]", within=("quota-row", "data"))
        browser.find("#limit-referenced").send_keys("150M")
        browser.click("dialog button[data-action=confirm]")
        wait_for(lambda: "150 MiB" in browser.row("quota-row", "data").text, "the limit shown")
        assert str(150 * MiB) in qgroups(mnt)
        browser.screenshot("cockpit-light")
        browser.set_theme("dark")
        wait_for(lambda: browser.row("quota-row", "data"), "the quota table (dark)")
        assert browser.driver.execute_script(
            "return document.documentElement.classList.contains('pf-theme-dark')")
        browser.screenshot("cockpit-dark")
        browser.set_theme("light")
        wait_for(lambda: browser.row("quota-row", "data"), "the quota table again")
        browser.click("button[data-action=clear-limit]", within=("quota-row", "data"))
        wait_for(lambda: "none" in browser.row("quota-row", "data").text, "the limit cleared")
        assert str(150 * MiB) not in qgroups(mnt)
        assert "Traceback" not in browser.text()


def test_admin_compare_restore_and_rollback(world: World, page_fs: LoopFs, browser: Browser
                                            ) -> None:
    """Compare a snapshot with the live subvolume, restore from the compare panel (one
    file deleted, one in the way: moved aside), roll back; all checked on disk."""
    mnt = page_fs.mount_point
    data = mnt / "data"
    if not data.exists():
        btrfs("subvolume", "create", str(data))
    (data / "keep.txt").write_text("v1\n")
    (data / "gone.txt").write_text("old\n")
    (data / ".snapshots").mkdir(mode=0o750, exist_ok=True)
    btrfs("subvolume", "snapshot", "-r", str(data), str(data / ".snapshots" / "t-compare"))
    snap = "data/.snapshots/t-compare"
    (data / "gone.txt").unlink()
    (data / "keep.txt").write_text("v2, changed after the snapshot\n")
    (data / "new.txt").write_text("new\n")
    with CockpitSession(world.sb, TEST_ADMIN) as cs:
        browser.open(page_url(cs, page_fs))
        panel = "#compare-panel"
        browser.set_theme("dark")
        browser.click("button[data-action=compare]", within=("snapshot-row", snap))
        wait_for(lambda: browser.finds(f"{panel} tr.change-row"), "the compare rows (dark)")
        browser.screenshot("cockpit-compare-dark")
        browser.set_theme("light")
        browser.click("button[data-action=compare]", within=("snapshot-row", snap))
        wait_for(lambda: browser.finds(f"{panel} tr.change-row[data-path='gone.txt']"),
                 "the compare rows")
        kinds = {r.get_attribute("data-path"): r.get_attribute("data-change")
                 for r in browser.finds(f"{panel} tr.change-row")}
        # .snapshots got a new entry (t-compare) after the snapshot was taken: new times
        assert kinds == {"gone.txt": "deleted", "keep.txt": "modified", "new.txt": "added",
                         ".snapshots": "metadata"}, kinds
        assert "4 changed paths" in browser.find(f"{panel} .compare-total").text
        counts = {b.get_attribute("data-kind"): b.text
                  for b in browser.finds(f"{panel} .compare-counts .badge")}
        assert counts == {"added": "added 1", "deleted": "deleted 1", "modified": "modified 1",
                          "metadata": "metadata 1"}, counts
        browser.screenshot("cockpit-compare")

        # restore the deleted file and the modified one (in the way: moved aside)
        for name in ("gone.txt", "keep.txt"):
            browser.click(f"{panel} tr.change-row[data-path='{name}'] input[type=checkbox]")
        browser.click(f"{panel} button[data-action=restore-selected]")
        assert browser.find("#restore-paths").get_attribute("value") == "gone.txt\nkeep.txt"
        assert browser.find("#restore-way-aside").is_selected()
        assert "before-restore" in browser.find("dialog").text
        browser.screenshot("cockpit-restore-dialog")
        browser.click("dialog button[data-action=confirm]")
        wait_for(lambda: [j for j in browser.finds(".job-completed") if "restore" in j.text],
                 "the restore job to complete")
        assert (data / "gone.txt").read_text() == "old\n"
        assert (data / "keep.txt").read_text() == "v1\n"
        aside = [p for p in data.iterdir() if p.name.startswith("keep.txt.before-restore-")]
        assert len(aside) == 1 and aside[0].read_text().startswith("v2"), aside
        job = next(j for j in browser.finds(".job") if "restore" in j.text)
        assert "2 of 2 files" in job.text, job.text
        assert float(job.find_element(By.CSS_SELECTOR, "[role=progressbar]")
                     .get_attribute("aria-valuenow")) == 100

        # compare with another snapshot instead: the older one (taken in the first test,
        # when data was empty) is "from", whichever row the panel was opened on
        older = next(r.get_attribute("data-path") for r in browser.finds("tr.snapshot-row")
                     if r.get_attribute("data-path") != snap)
        Select(browser.find("#compare-with")).select_by_visible_text(older)
        wait_for(lambda: browser.find(f"{panel} .compare-old").text == older, "the swapped pair")
        kinds = wait_for(lambda: {r.get_attribute("data-path"): r.get_attribute("data-change")
                                  for r in browser.finds(f"{panel} tr.change-row")
                                  if r.get_attribute("data-path").endswith(".txt")},
                         "the rows of the other pair")
        assert kinds == {"gone.txt": "added", "keep.txt": "added"}, kinds

        # roll back: the current state is kept read-only, its path shown
        (data / "after.txt").write_text("after\n")
        browser.click("button[data-action=rollback]", within=("snapshot-row", snap))
        dialog = browser.find("dialog").text
        assert "read-only snapshot" in dialog and "next mount" not in dialog, dialog
        browser.click("dialog button[data-action=confirm]")
        alert = wait_for(lambda: browser.find("#alert-rollback p"), "the rollback's message").text
        saved = alert.rsplit("kept as ", 1)[1].rstrip(".")
        assert saved.startswith(f"{data}/.snapshots/"), alert
        assert not (data / "after.txt").exists()
        assert sorted(p.name for p in data.iterdir() if not p.name.startswith(".")) == [
            "gone.txt", "keep.txt"]
        assert " path " + os.path.relpath(saved, mnt) + "\n" in btrfs(
            "subvolume", "list", "-r", str(mnt))
        # the subvolume is now a copy of the snapshot (btrfs-progs says so)
        assert show_field(data, "Parent UUID") == show_field(mnt / snap, "UUID")
        assert not browser.finds(".alert-danger"), browser.text()
        assert "Traceback" not in browser.text()


def test_unprivileged_user_sees_a_denial(world: World, page_fs: LoopFs, browser: Browser
                                         ) -> None:
    mnt = page_fs.mount_point
    if not (mnt / "data").exists():
        subprocess.run(["btrfs", "subvolume", "create", str(mnt / "data")], check=True,
                       stdout=subprocess.DEVNULL)
    if not (mnt / "data-snap").exists():
        btrfs("subvolume", "snapshot", "-r", str(mnt / "data"), str(mnt / "data-snap"))
    before = btrfs("subvolume", "list", str(mnt))
    with CockpitSession(world.sb, TEST_USER) as cs:
        browser.open(page_url(cs, page_fs))
        wait_for(lambda: browser.row("subvolume-row", "data"), "the subvolume list")
        browser.click("button[data-action=snapshot]", within=("subvolume-row", "data"))
        alert = wait_for(lambda: browser.find("#alert-access"), "the access message")
        assert "Administrative access required" in alert.text
        browser.click("button[data-action=scrub]")
        wait_for(lambda: len(browser.finds("#alert-access")) >= 2, "a second access message")
        browser.click("button[data-action=compare]", within=("snapshot-row", "data-snap"))
        wait_for(lambda: len(browser.finds("#alert-access")) >= 3, "the compare's access message")
        assert "not allowed to compare" in browser.finds("#alert-access")[-1].text
        body = browser.text()
        for bad in ("Traceback", "Error:", "org.freedesktop", "undefined", "null"):
            assert bad not in body, body
        browser.screenshot("cockpit-denied")
    assert btrfs("subvolume", "list", str(mnt)) == before
    assert not browser.finds(".job-running")  # (the admin's finished scrubs may show)
