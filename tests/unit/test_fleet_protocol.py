"""The fleet's wire format (btrfsd/fleet/protocol.py), settings and status records, and
btrfsctl's hand-over of --host to the full path."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from dbus_fast import Variant

from btrfsd.cli import commands, lean
from btrfsd.fleet import protocol
from btrfsd.fleet.connect import FleetCallError, Requester
from btrfsd.fleet.protocol import ProtocolError
from btrfsd.fleet.settings import NatsSettings, SettingsError, load_bridge, load_client
from btrfsd.fleet.status import HostStatus


def test_subjects() -> None:
    assert protocol.method_subject("db-1", "Filesystem", "CreateSnapshot") == \
        "btrfsd.db-1.Filesystem.CreateSnapshot"
    assert protocol.parse_subject("btrfsd.db-1.Job.Cancel") == ("db-1", "Job", "Cancel")
    for bad in ("db.1", "db*", "", "a b", ">"):
        with pytest.raises(ValueError):
            protocol.method_subject(bad, "Manager", "GetFilesystems")
    for subject in ("btrfsd.h.Nope.X", "btrfsd.h.Manager", "other.h.Manager.X",
                    "btrfsd.h.Manager.1x"):
        with pytest.raises(ProtocolError) as e:
            protocol.parse_subject(subject)
        assert e.value.name == protocol.UNKNOWN_METHOD
    # a bridge never subscribes to its own events
    assert not any(s.startswith("btrfsd.h.events") for s in protocol.request_subjects("h"))


def test_request_parsing() -> None:
    assert protocol.parse_request(b"", "Manager") == ("/org/btrfsd1", [])
    assert protocol.parse_request(b'{"object": "/org/btrfsd1/jobs/3", "args": [1]}', "Job") \
        == ("/org/btrfsd1/jobs/3", [1])
    for data, token in ((b"{", "Manager"), (b"[]", "Manager"), (b'{"args": 1}', "Manager"),
                        (b"{}", "Filesystem"), (b'{"object": "/etc"}', "Job"),
                        (b'{"object": "/org/btrfsd1/jobs/1"}', "Manager"),
                        (b'{"extra": 1}', "Manager"), (b"[" * 50000, "Manager")):
        with pytest.raises(ProtocolError) as e:
            protocol.parse_request(data, token)
        assert e.value.name == protocol.INVALID_ARGUMENT


def test_json_to_dbus_by_signature() -> None:
    out = protocol.to_dbus_args("ssa{sv}", ["/a", "", {"read_only": False, "n": 5}])
    assert out[:2] == ["/a", ""]
    assert out[2]["read_only"] == Variant("b", False)
    assert out[2]["n"] == Variant("x", 5)
    # the trailing options may be left out
    assert protocol.to_dbus_args("sa{sv}", ["/a"]) == ["/a", {}]
    # exact variant types
    (opts,) = protocol.to_dbus_args("a{sv}", [{"limit": {"$v": ["t", 2**63]},
                                               "usage": {"$v": ["au", [1, 2]]}}])
    assert opts["limit"] == Variant("t", 2**63) and opts["usage"] == Variant("au", [1, 2])
    assert protocol.to_dbus_args("(sb)a{tx}", [["x", True], {"7": -1}]) == [["x", True],
                                                                             {7: -1}]


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(("signature", "args"), [
    ("s", [1]), ("b", [1]), ("t", [-1]), ("u", [2**32]), ("t", [True]), ("o", ["no path"]),
    ("s", ["a\0b"]), ("as", ["x"]), ("a{sv}", [{"x": None}]), ("a{sv}", [{"x": {"$v": 1}}]),
    ("a{sv}", [{"x": {"$v": ["ss", "a"]}}]), ("(ss)", [["a"]]), ("s", []), ("s", ["a", "b"]),
    ("a{tv}", [{"x": 1}]), ("d", ["1"]), ("av", [_nested(40)]),
])
def test_wrong_types_are_named_errors(signature: str, args: list[object]) -> None:
    with pytest.raises(ProtocolError) as e:
        protocol.to_dbus_args(signature, args)
    assert e.value.name == protocol.INVALID_ARGUMENT


def test_replies_round_trip() -> None:
    body = protocol.reply_body([Variant("a{sv}", {"x": Variant("t", 3)}), ("a", 1), b"\x01"])
    assert protocol.parse_reply(body) == ([{"x": 3}, ["a", 1], [1]], None)
    err = protocol.error_body("org.btrfsd1.Error.Busy", "busy", {"hint": Variant("s", "x")})
    assert protocol.parse_reply(err) == (None, ("org.btrfsd1.Error.Busy", "busy",
                                                {"hint": "x"}))
    assert protocol.parse_reply(b"nope")[1][0] == protocol.FAILED  # type: ignore[index]
    assert protocol.parse_reply(b"{}")[1][0] == protocol.FAILED  # type: ignore[index]
    # a client's Variants keep their types to the bridge
    sent = json.loads(protocol.request_body("/org/btrfsd1", [{"l": Variant("u", 3)}]))
    assert sent == {"object": "/org/btrfsd1", "args": [{"l": {"$v": ["u", 3]}}]}
    assert protocol.to_dbus_args("a{sv}", sent["args"]) == [{"l": Variant("u", 3)}]


def test_bridge_settings(tmp_path: Path) -> None:
    conf = tmp_path / "fleet.toml"
    conf.write_text('host = "db-1"\nheartbeat = 2\n[nats]\nservers = ["tls://n:4222"]\n'
                    'creds = "/etc/btrfsd/fleet/db-1.creds"\n')
    s = load_bridge(conf)
    assert s.host == "db-1" and s.heartbeat == 2 and s.nats.servers == ["tls://n:4222"]
    assert load_bridge(conf, host="db-2").host == "db-2"
    for text in ('host = "a.b"\n', "heartbeat = 0\n", "bogus = 1\n",
                 '[nats]\nservers = ["http://x"]\n', '[nats]\npassword = "x"\n', "host = "):
        conf.write_text(text)
        with pytest.raises(SettingsError, match=str(conf)):
            load_bridge(conf)


def test_client_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BTRFSD_FLEET_CONFIG", str(tmp_path / "none.toml"))
    assert load_client().servers == ["nats://127.0.0.1:4222"]
    assert load_client("nats://a:1, nats://b:2", "/x.creds").servers == ["nats://a:1",
                                                                        "nats://b:2"]
    conf = tmp_path / "c.toml"
    conf.write_text('[nats]\nuser = "admin"\npassword_file = "/p"\n')
    monkeypatch.setenv("BTRFSD_FLEET_CONFIG", str(conf))
    assert load_client().user == "admin"
    conf.write_text('host = "x"\n')
    with pytest.raises(SettingsError):
        load_client()


def test_status_reachability() -> None:
    st = HostStatus(host="h", heartbeat=10, last_seen=1000.0)
    assert st.reachable(1029) and st.summary(1029) == "up"
    assert not st.reachable(1031)
    assert st.summary(1031) == "unreachable since 1970-01-01 00:16:40 UTC"
    st.state = "stopped"
    assert st.summary(1001).startswith("stopped since")
    again = HostStatus.from_json(HostStatus(host="h", heartbeat=1).to_json())
    assert again.host == "h"
    for bad in (b"[]", b'{"host": 1}', b'{"host": "h"}'):
        with pytest.raises(ValueError):
            HostStatus.from_json(bad)


def test_host_options_go_to_the_full_path() -> None:
    assert lean.parse(["--host", "h", "snapshot", "/x"]) is None
    assert lean.parse(["--json", "--hosts", "db-*", "snapshot", "/x"]) is None
    assert commands._rewrite(["--host", "h", "snapshot", "list", "/x"]) == \
        ["--host", "h", "snapshot-list", "/x"]
    args = commands.build_parser().parse_args(
        commands._rewrite(["--hosts", "db-*", "--json", "snapshot", "/x"]))
    assert args.hosts == "db-*" and args.source == "/x"
    with pytest.raises(SystemExit):
        commands.build_parser().parse_args(["--host", "a", "--hosts", "b", "fs", "list"])


async def test_no_nats_server_is_a_quick_named_error() -> None:
    # nats-py would retry one server forever at max_reconnect_attempts 0
    req = Requester(NatsSettings(servers=["nats://127.0.0.1:1"], connect_timeout=2))
    with pytest.raises(FleetCallError) as e:
        async with asyncio.timeout(10):
            await req.connect()
    assert e.value.name == protocol.NO_SERVER
