"""A backup's transfer: the kernel's send stream (fs/send.py) pumped into btrfs-progs'
``btrfs receive`` (blocking; call from a worker thread).

Spawning ``btrfs receive`` is the one place btrfsd runs btrfs-progs (README, layout):
the receive side is a userspace interpreter of the stream whose only maintained
implementation is btrfs-progs'. It is started with a fixed argv (no shell, nothing the
caller chose), a minimal environment, and its working directory set through
``/proc/self/fd/N`` of the target directory btrfsd opened and checked, so it is given
``.``, never a name. The pump between the two counts bytes (the job's progress), can
limit the rate, and stops both ends on request. Send, pump and receive run at nice 10
(fs/priority.py) so the event loop wins the CPU over them; the end of receive is waited
for on a pidfd, polled together with the stop request, so neither is seen late.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import select
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence

from ..errors import BtrfsdError, Cancelled, Failed, NoSpace, NotFound, from_errno
from . import priority
from .send import send

log = logging.getLogger(__name__)

BTRFS_CANDIDATES = ("/usr/sbin/btrfs", "/usr/bin/btrfs", "/sbin/btrfs", "/bin/btrfs")
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
_PIPE_SIZE = 1 << 20
_CHUNK = 1 << 20
_STDERR_TAIL = 2000


def btrfs_program() -> str:
    """The btrfs-progs program at a fixed system place (never looked up in a PATH a
    caller could set). Raises NotFound."""
    for path in BTRFS_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    raise NotFound("btrfs-progs is not installed (no btrfs in /usr/sbin, /usr/bin, /sbin "
                   "or /bin); backups receive with its 'btrfs receive'.")


class StopEvent(threading.Event):
    """A threading.Event whose ``set`` also wakes a ``poll`` on the descriptor
    ``pollable`` lends while it is open (so a wait for receive's exit needs no timer)."""

    def __init__(self) -> None:
        super().__init__()
        self._fd_lock = threading.Lock()  # set() never writes to a closed (reused) fd
        self._fd = -1

    def set(self) -> None:
        super().set()
        with self._fd_lock:
            if self._fd >= 0:
                os.eventfd_write(self._fd, 1)

    @contextlib.contextmanager
    def pollable(self) -> Iterator[int]:
        """An eventfd readable once the event is set (already readable if it is).
        Raises OSError."""
        fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        with self._fd_lock:
            self._fd = fd
        try:
            if self.is_set():
                os.eventfd_write(fd, 1)
            yield fd
        finally:
            with self._fd_lock:
                self._fd = -1
            os.close(fd)


class Transfer:
    """One send piped into one ``btrfs receive``. ``bytes_done`` is read by the event
    loop while ``run`` works in a thread; ``stop`` asks it to end (it raises Cancelled)."""

    def __init__(self, rate_limit: int = 0) -> None:
        self.rate_limit = rate_limit  # bytes per second; 0: as fast as it goes
        self.bytes_done = 0
        self.stop = StopEvent()

    def run(self, snap_fd: int, target_fd: int, *, parent_root: int = 0,
            clone_roots: Sequence[int] = ()) -> None:
        """Send the snapshot open as ``snap_fd`` (incrementally against ``parent_root``
        when not 0) and receive it in the directory open as ``target_fd``. Returns when
        ``btrfs receive`` has exited successfully; a partial subvolume is the caller's
        to remove. Raises Cancelled, NoSpace, Failed, NotFound (no btrfs-progs)."""
        program = btrfs_program()
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # the default size works, in more steps
            fcntl.fcntl(read_fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        failure: list[OSError] = []

        def sender() -> None:
            priority.lower()
            try:
                send(snap_fd, write_fd, parent_root=parent_root, clone_roots=clone_roots)
            except OSError as e:
                failure.append(e)
            finally:
                os.close(write_fd)

        errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed in the finally below)
        proc: subprocess.Popen[bytes] | None = None
        thread: threading.Thread | None = None
        try:
            proc = subprocess.Popen(
                [program, "receive", "."], stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL, stderr=errors, env=_ENV, close_fds=True,
                cwd=f"/proc/self/fd/{target_fd}", pass_fds=(target_fd,),
                start_new_session=True)  # a terminal's signals are not its
            # not a preexec_fn (unsafe with threads); it runs at nice 0 for a moment
            priority.lower(proc.pid)
            thread = threading.Thread(target=sender, name="backup-send", daemon=True)
            thread.start()
            self._pump_lowered(read_fd, proc)
            assert proc.stdin is not None
            proc.stdin.close()
            self._wait(proc)
        except BaseException:
            if proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
            raise
        finally:
            os.close(read_fd)  # a send still writing gets EPIPE and returns
            if thread is not None:
                thread.join()
            else:
                os.close(write_fd)
            if proc is not None and proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            errors.seek(0)
            said = errors.read()[-_STDERR_TAIL:].decode(errors="replace")
            errors.close()
        self._judge(proc, failure, said)

    def _pump_lowered(self, read_fd: int, proc: subprocess.Popen[bytes]) -> None:
        # a thread of its own: a thread's nice cannot be raised back (no CAP_SYS_NICE),
        # and the caller's may be a pooled one
        raised: list[BaseException] = []

        def pump() -> None:
            priority.lower()
            try:
                self._pump(read_fd, proc)
            except BaseException as e:
                raised.append(e)

        worker = threading.Thread(target=pump, name="backup-pump", daemon=True)
        worker.start()
        worker.join()
        if raised:
            raise raised[0]

    def _pump(self, read_fd: int, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None
        out = proc.stdin.fileno()
        started = time.monotonic()
        while True:
            if self.stop.is_set():
                raise Cancelled("The backup was cancelled.")
            try:
                # pipe to pipe inside the kernel: no copy through this process
                n = os.splice(read_fd, out, _CHUNK)
            except BrokenPipeError:
                return  # receive gave up; its exit status says why
            if not n:
                return
            self.bytes_done += n
            if self.rate_limit:
                ahead = self.bytes_done / self.rate_limit - (time.monotonic() - started)
                if ahead > 0 and self.stop.wait(ahead):
                    raise Cancelled("The backup was cancelled.")

    def _wait(self, proc: subprocess.Popen[bytes]) -> None:
        # receive's pidfd turns readable when it exits, the stop's eventfd when a cancel
        # comes: no timer, so neither is noticed late (Popen.wait(timeout) sleeps in
        # growing steps and saw a receive that ended 4 ms later at 7.5 ms)
        pidfd = os.pidfd_open(proc.pid)  # not reaped before proc.wait(): still this one
        try:
            with self.stop.pollable() as wake:
                poller = select.poll()
                poller.register(pidfd, select.POLLIN)
                poller.register(wake, select.POLLIN)
                while True:
                    ready = {fd for fd, _ in poller.poll()}
                    if pidfd in ready:
                        proc.wait()
                        return
                    if wake in ready:
                        raise Cancelled("The backup was cancelled.")
        finally:
            os.close(pidfd)

    @staticmethod
    def _judge(proc: subprocess.Popen[bytes] | None, failure: list[OSError],
               said: str) -> None:
        assert proc is not None
        last = said.strip().splitlines()[-1] if said.strip() else ""
        log.info("btrfs receive exited with %s: %s", proc.returncode, said.strip())
        if "No space left on device" in said:
            raise NoSpace(f"The target ran out of space while receiving ({last}).")
        if proc.returncode != 0:
            raise Failed(f"btrfs receive failed (exit status {proc.returncode}): "
                         f"{last or 'it said nothing'}.")
        if failure:
            code = failure[0].errno or 0
            err: BtrfsdError = from_errno(code, "The kernel could not send the snapshot: "
                                                f"{os.strerror(code)}.")
            raise err
