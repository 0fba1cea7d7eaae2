"""Core errors become named D-Bus errors with details, and building one never fails."""

from __future__ import annotations

import pytest

from btrfsd.bus.errors import DetailedError, to_dbus_error
from btrfsd.errors import AlreadyRunning, Hint, HintKind, InvalidArgument

FACTS = {
    HintKind.ENABLE_QUOTA: {"filesystem": "1234-ab"},
    HintKind.JOB_RUNNING: {"job_id": 7, "operation": "scrub"},
    HintKind.OTHER_FILESYSTEM: {"filesystem": "1234-ab", "path": "/x"},
    HintKind.LIST_SCHEDULES: {"name": "home"},
}


@pytest.mark.parametrize("kind", list(HintKind))
def test_every_hint_is_worded_for_dbus_callers(kind: HintKind) -> None:
    err = to_dbus_error(InvalidArgument("It happened.", hint=Hint(kind, FACTS[kind])))
    assert isinstance(err, DetailedError) and err.type == "org.btrfsd1.Error.InvalidArgument"
    assert err.text.startswith("It happened. ") and len(err.text) > len("It happened. ")
    assert err.details["hint"].value == str(kind)
    assert err.details["message"].value == "It happened."
    for key, value in FACTS[kind].items():
        assert err.details[key].value == value


def test_job_running_names_the_job_path() -> None:
    err = to_dbus_error(AlreadyRunning("Busy.", hint=Hint(HintKind.JOB_RUNNING,
                                                          FACTS[HintKind.JOB_RUNNING])))
    assert "/org/btrfsd1/jobs/7" in err.text and "/org/" not in err.details["message"].value


def test_a_hint_without_its_facts_still_gives_the_error() -> None:
    err = to_dbus_error(AlreadyRunning("Busy.", hint=Hint(HintKind.JOB_RUNNING, {})))
    assert err.type == "org.btrfsd1.Error.AlreadyRunning" and err.text == "Busy."
    assert err.details["message"].value == "Busy."


def test_an_error_without_hint_has_its_message_only() -> None:
    err = to_dbus_error(InvalidArgument("Plain."))
    assert err.text == "Plain." and set(err.details) == {"message"}
