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

from ..constants import Action
from ..core.subvolumes import Creds
from .auth import acting_for_caller, current_caller
from .polkit import Authority, PolkitUnavailable

log = logging.getLogger(__name__)

_NOBODY_GID = 65534


async def _creds(authority: Authority, sender: str) -> Creds:
    """The caller's filesystem identity: uid and groups from the bus daemon, primary gid
    from the user database. Raises DBusError when the bus does not know the caller."""
    who = await authority.identity_of(sender)
    try:
        gid = pwd.getpwuid(who.uid).pw_gid
    except KeyError:  # a uid without a name: its own groups only, no guessed group
        gid = who.groups[0] if who.groups else _NOBODY_GID
    return Creds(uid=who.uid, gid=gid, groups=who.groups)


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
    return await _creds(authority, caller.sender)


async def own_identity(authority: Authority) -> Creds | None:
    """The caller's identity when the call was allowed only for their own objects (the
    core then lets the kernel judge with it); None when it acts with btrfsd's."""
    if not acting_for_caller():
        return None
    return await _creds(authority, current_caller().sender)
