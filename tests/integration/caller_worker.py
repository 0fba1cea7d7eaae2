"""A D-Bus caller process for tests: run as any user (setpriv), driven by JSON lines.

Request: {"calls": [{"path", "iface", "member", "sig", "body", "interactive"}, ...]}
or {"subscribe": match_rule} (reply {"results": []}) to start collecting signals, and
{"signals": true} to receive the collected ones (reply {"results": [{"path", "iface",
"member", "body"}, ...]}) and clear them.
All calls of one request are sent at once (concurrently); the reply is one JSON line:
{"results": [{"ok": true, "body": [...]} | {"ok": false, "error": name, "message": text,
"details": {...}}]} (details: the error reply's a{sv} after the text, {} when absent).
In "body", {"$v": [signature, value]} stands for a Variant. A call with "timed": true
also gets "sent" and "done" (time.monotonic() when it was sent and answered).
Only the standard library and dbus-fast: it runs from the sandbox, not the repo.
"""

import asyncio
import json
import sys
import time

from dbus_fast import BusType, Message, MessageFlag, MessageType, Variant
from dbus_fast.aio import MessageBus


def decode(v):
    if isinstance(v, dict):
        if set(v) == {"$v"}:
            sig, val = v["$v"]
            return Variant(sig, decode(val))
        return {k: decode(x) for k, x in v.items()}
    if isinstance(v, list):
        return [decode(x) for x in v]
    return v


def encode(v):
    if isinstance(v, Variant):
        return encode(v.value)
    if isinstance(v, dict):
        return {str(k): encode(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [encode(x) for x in v]
    if isinstance(v, bytes):
        return v.hex()
    return v


async def one(bus, c):
    sent = time.monotonic()
    result = await _one(bus, c)
    if c.get("timed"):  # CLOCK_MONOTONIC: comparable between caller processes
        result.update(sent=sent, done=time.monotonic())
    return result


async def _one(bus, c):
    flags = MessageFlag.NONE
    if c.get("interactive"):
        flags = MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION
    reply = await bus.call(Message(destination=c.get("dest", "org.btrfsd1"), path=c["path"],
                                   interface=c["iface"], member=c["member"],
                                   signature=c.get("sig", ""), body=decode(c.get("body", [])),
                                   flags=flags))
    if reply.message_type == MessageType.ERROR:
        return {"ok": False, "error": reply.error_name,
                "message": reply.body[0] if reply.body else "",
                "details": encode(reply.body[1]) if len(reply.body) > 1 else {}}
    return {"ok": True, "body": encode(reply.body)}


async def main():
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    loop = asyncio.get_running_loop()
    signals = []

    def collect(msg):
        if msg.message_type == MessageType.SIGNAL:
            signals.append({"path": msg.path, "iface": msg.interface, "member": msg.member,
                            "body": encode(msg.body)})

    bus.add_message_handler(collect)
    print(json.dumps({"ready": bus.unique_name}), flush=True)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        req = json.loads(line)
        if "subscribe" in req:
            await one(bus, {"dest": "org.freedesktop.DBus", "path": "/org/freedesktop/DBus",
                            "iface": "org.freedesktop.DBus", "member": "AddMatch", "sig": "s",
                            "body": [req["subscribe"]]})
            results = []
        elif "signals" in req:
            results, signals[:] = list(signals), []
        else:
            results = await asyncio.gather(*(one(bus, c) for c in req["calls"]))
        print(json.dumps({"results": results}), flush=True)


asyncio.run(main())
