"""Whose view a read call answers with (issue 17).

btrfsd sees everything as root; an unprivileged caller must see no more than they could
find themselves. Root, and callers polkit grants ``org.btrfsd1.read-all``, get the whole
view (None); anyone else gets their own identity (uid, primary gid, groups, from the bus
daemon's record of their connection, never from anything they send), and the core
answers with what that identity can reach (fs/creds.py).
"""

from __future__ import annotations

import logging
import pwd
from collections import OrderedDict

from dbus_fast import Message, MessageType

from ..constants import Action
from ..core.subvolumes import Creds
from .auth import acting_for_caller, current_caller
from .context import current_bus, current_message
from .polkit import Authority, PolkitUnavailable

log = logging.getLogger(__name__)

_NOBODY_GID = 65534
# Unique names are never reused on a bus, so a cached identity cannot go stale.
_cache: OrderedDict[str, Creds] = OrderedDict()


async def _creds(sender: str, uid: int) -> Creds:
    if (hit := _cache.get(sender)) is not None:
        return hit
    reply = await current_bus().call(Message(
        destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus", member="GetConnectionCredentials", signature="s",
        body=[sender]))
    groups: tuple[int, ...] = ()
    if reply is not None and reply.message_type != MessageType.ERROR:
        found = reply.body[0]
        if "UnixGroupIDs" in found:
            groups = tuple(int(g) for g in found["UnixGroupIDs"].value)
    try:
        gid = pwd.getpwuid(uid).pw_gid
    except KeyError:  # a uid without a name: its own groups only, no guessed group
        gid = groups[0] if groups else _NOBODY_GID
    creds = Creds(uid=uid, gid=gid, groups=groups)
    _cache[sender] = creds
    if len(_cache) > 4096:
        _cache.popitem(last=False)
    return creds


async def read_view(authority: Authority) -> Creds | None:
    """The identity whose view the call being served answers with; None for the whole
    view. Raises DBusError when the bus cannot say who the caller is."""
    caller = current_caller()
    if caller.uid == 0:
        return None
    try:
        allowed, _challenge = await authority.check(caller.sender, Action.READ_ALL, False)
    except PolkitUnavailable:
        allowed = False  # fail closed: the caller's own view
    if allowed:
        return None
    return await _creds(current_message().sender or "", caller.uid)


async def own_identity() -> Creds | None:
    """The caller's identity when the call was allowed only for their own objects (the
    core then lets the kernel judge with it); None when it acts with btrfsd's."""
    if not acting_for_caller():
        return None
    caller = current_caller()
    return await _creds(caller.sender, caller.uid)
