"""A go or no-go for work that starts before its caller is known to be allowed.

A front end that must ask someone (polkit) whether a call may go on can start the call's
read-only part meanwhile: path walks and checks in a worker thread overlap the question.
The work waits at the gate before its first change; the front end opens the gate when the
answer is yes and shuts it otherwise, so a call that is refused changes nothing.
"""

from __future__ import annotations

import threading

from ..errors import BtrfsdError

# A gate nobody opens or shuts within this time counts as shut, unless its front end says
# how long its question may take: a forgotten gate must not hold a worker thread for good.
LONGEST_WAIT = 120.0


class GateShut(BtrfsdError):
    """The work was not allowed to go on; nothing was changed. The front end answers the
    caller with its own refusal, never with this."""

    name = "Failed"


class Gate:
    """Opened or shut once, by the front end; waited on by the work (blocking: in the
    worker thread that does it)."""

    def __init__(self, longest: float | None = None) -> None:
        """``longest``: seconds after which an undecided gate counts as shut (default
        LONGEST_WAIT); longer than the front end's question may take."""
        self._decided = threading.Event()
        self._open = False
        self._longest = LONGEST_WAIT if longest is None else longest

    def open(self) -> None:
        """Let the work go on. No effect once shut."""
        if not self._decided.is_set():
            self._open = True
            self._decided.set()

    def shut(self) -> None:
        """Stop the work at the gate. No effect once open."""
        self._decided.set()

    def wait(self) -> None:
        """Return once the gate is open, at once if it is. Raises GateShut when it was
        shut or nobody decided in time (``longest``)."""
        if not self._decided.wait(self._longest) or not self._open:
            raise GateShut("The call was not allowed to go on; nothing was changed.")


def wait_at(gate: Gate | None) -> None:
    """Wait at ``gate`` (nothing to wait for without one). Raises GateShut."""
    if gate is not None:
        gate.wait()
