"""btrfsctl words the daemon's structured error hints itself (no daemon needed)."""

from __future__ import annotations

from typing import Any

import pytest
from dbus_fast import Message, MessageType, Variant

from btrfsd.cli.client import CallError
from btrfsd.cli.errors import advice, error_json, error_line

BUSY = "org.btrfsd1.Error.AlreadyRunning"
INVALID = "org.btrfsd1.Error.InvalidArgument"
NOT_FOUND = "org.btrfsd1.Error.NotFound"


def error(name: str, text: str, /, **details: Any) -> CallError:
    return CallError(name, text, details)


@pytest.mark.parametrize(("details", "expected"), [
    ({"hint": "enable-quota", "filesystem": "f00"},
     "Quotas must be on: enable them first with btrfsctl quota enable PATH."),
    ({"hint": "job-running", "job_id": 7, "operation": "scrub"},
     "Wait for it (btrfsctl jobs --follow) or cancel it (btrfsctl scrub cancel PATH)."),
    ({"hint": "job-running", "job_id": 7, "operation": "balance"},
     "Wait for it (btrfsctl jobs --follow) or cancel it (btrfsctl balance cancel PATH)."),
    ({"hint": "job-running", "job_id": 7, "operation": "quota-rescan"},
     "Wait for it (btrfsctl jobs --follow)."),
    ({"hint": "job-running"}, "Wait for it (btrfsctl jobs --follow)."),
    ({"hint": "other-filesystem", "filesystem": "f00", "path": "/mnt/b/x"},
     "/mnt/b/x is on another filesystem; give a path on the filesystem you mean."),
    ({"hint": "other-filesystem"},
     "That path is on another filesystem; give a path on the filesystem you mean."),
    ({"hint": "list-schedules", "name": "home"}, "btrfsctl schedule list shows the schedules."),
])
def test_each_hint_kind_is_worded_by_btrfsctl(details: dict[str, Any], expected: str) -> None:
    assert advice(details) == expected


@pytest.mark.parametrize("details", [{}, {"hint": "reboot-the-moon"}, {"hint": 3},
                                     {"message": "m"}])
def test_no_or_unknown_hint_gives_no_advice(details: dict[str, Any]) -> None:
    assert advice(details) is None


def test_line_is_message_then_cli_advice() -> None:
    e = error(INVALID, "Quotas are off on this filesystem; enable them first (...).",
              message="Quotas are off on this filesystem.", hint="enable-quota", filesystem="f00")
    # the integration test of quota set still finds "enable them first" in stderr
    assert error_line(e) == ("btrfsctl: Invalid argument: Quotas are off on this filesystem. "
                             "Quotas must be on: enable them first with btrfsctl quota "
                             "enable PATH.")


def test_job_running_line() -> None:
    e = error(BUSY, "A scrub (job 7) is already on /mnt. Wait for it or cancel it.",
              message="A scrub (job 7) is already on /mnt.", hint="job-running", job_id=7,
              operation="scrub")
    assert error_line(e) == ("btrfsctl: Already running: A scrub (job 7) is already on /mnt. "
                             "Wait for it (btrfsctl jobs --follow) or cancel it "
                             "(btrfsctl scrub cancel PATH).")


def test_without_details_the_line_is_as_before() -> None:
    e = CallError(NOT_FOUND, "There is no schedule 'x' (btrfsctl schedule list).")
    assert e.details == {}
    assert error_line(e) == ("btrfsctl: Not found: There is no schedule 'x' "
                             "(btrfsctl schedule list).")


def test_unknown_hint_falls_back_to_the_full_text() -> None:
    # the daemon's own advice in the full text beats none at all
    e = error(NOT_FOUND, "Gone. Try the new thing.", message="Gone.", hint="new-thing")
    assert error_line(e) == "btrfsctl: Not found: Gone. Try the new thing."


def test_message_without_hint_is_printed_alone() -> None:
    e = error(NOT_FOUND, "Gone.", message="Gone.", path="/x")
    assert error_line(e) == "btrfsctl: Not found: Gone."


def test_known_hint_without_message_keeps_the_full_text() -> None:
    e = error(NOT_FOUND, "There is no schedule 'x' (btrfsctl schedule list).",
              hint="list-schedules", name="x")
    assert error_line(e) == ("btrfsctl: Not found: There is no schedule 'x' "
                             "(btrfsctl schedule list).")


def test_unknown_error_name() -> None:
    e = error("org.example.Weird", "odd", message="odd", hint="list-schedules", name="x")
    assert error_line(e) == ("btrfsctl: Error org.example.Weird: odd btrfsctl schedule list "
                             "shows the schedules.")


def test_json_gains_hint_and_facts() -> None:
    e = error(BUSY, "full text", message="core text", hint="job-running", job_id=7,
              operation="balance")
    assert error_json(e) == {"error": BUSY, "message": error_line(e).split(": ", 2)[2],
                             "hint": "job-running", "job_id": 7, "operation": "balance"}
    assert error_json(e)["message"].startswith("core text ")  # btrfsctl's words, not D-Bus's


def test_json_facts_never_replace_error_or_message() -> None:
    e = error(NOT_FOUND, "full text", message="core text", error="x")
    assert error_json(e) == {"error": NOT_FOUND, "message": "core text"}


def test_json_without_details_is_as_before() -> None:
    assert error_json(CallError(NOT_FOUND, "gone")) == {"error": NOT_FOUND, "message": "gone"}


def test_details_come_unwrapped_from_the_reply() -> None:
    reply = Message(message_type=MessageType.ERROR, error_name=BUSY, reply_serial=1,
                    signature="sa{sv}", body=["full", {
                        "message": Variant("s", "core"), "hint": Variant("s", "job-running"),
                        "job_id": Variant("t", 7), "operation": Variant("s", "scrub")}])
    e = CallError.from_reply(reply)
    assert (e.name, e.text) == (BUSY, "full")
    assert e.details == {"message": "core", "hint": "job-running", "job_id": 7,
                         "operation": "scrub"}


@pytest.mark.parametrize(("signature", "body", "text"), [
    ("s", ["only text"], "only text"),  # today's daemon
    ("", [], ""),
    ("ss", ["text", "not a dict"], "text"),
])
def test_replies_without_details(signature: str, body: list[Any], text: str) -> None:
    reply = Message(message_type=MessageType.ERROR, error_name=NOT_FOUND, reply_serial=1,
                    signature=signature, body=body)
    e = CallError.from_reply(reply)
    assert (e.text, e.details) == (text, {})
