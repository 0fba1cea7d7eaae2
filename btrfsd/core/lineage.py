"""Which subvolume a snapshot belongs to, also after a rollback replaced it.

A snapshot names its source by ``parent_uuid``. After a rollback the source is kept as a
read-only snapshot and the live subvolume is a writable snapshot of an older snapshot:
following ``parent_uuid`` from the live one reaches the old source, so its snapshots
still belong to it.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import InvalidArgument, NotFound
from ..fs.info import SubvolumeInfo

# more rollbacks than this in one line is a loop in corrupt metadata, not history
_MAX_CHAIN = 10_000


def ancestry(start: SubvolumeInfo, by_uuid: dict[str, SubvolumeInfo]) -> list[str]:
    """UUIDs of ``start`` and of what it was snapshotted from, back in time."""
    chain, cur, seen = [start.uuid], start, {start.uuid}
    while cur.parent_uuid and len(chain) < _MAX_CHAIN:
        chain.append(cur.parent_uuid)
        nxt = by_uuid.get(cur.parent_uuid)
        if nxt is None or nxt.uuid in seen:
            break
        seen.add(nxt.uuid)
        cur = nxt
    return chain


def belongs_to(snapshot: SubvolumeInfo, live: SubvolumeInfo,
               items: Iterable[SubvolumeInfo]) -> bool:
    """Whether ``snapshot`` was taken of ``live`` or of what ``live`` was rolled back
    from (not the same subvolume)."""
    if snapshot.uuid == live.uuid:
        return False
    by_uuid = {s.uuid: s for s in items}
    return snapshot.parent_uuid in ancestry(live, by_uuid)


def live_of(snapshot: SubvolumeInfo, items: Iterable[SubvolumeInfo]) -> SubvolumeInfo:
    """The writable subvolume ``snapshot`` belongs to: its source, or the writable
    subvolume closest in line after its source was rolled back. Raises InvalidArgument
    (not a snapshot), NotFound (its source is gone)."""
    if not snapshot.parent_uuid:
        raise InvalidArgument(f"{snapshot.path or '/'} is not a snapshot.")
    items = list(items)
    by_uuid = {s.uuid: s for s in items}
    origin = by_uuid.get(snapshot.parent_uuid)
    if origin is not None and not origin.read_only:
        return origin
    best: tuple[int, SubvolumeInfo] | None = None
    for s in items:
        if s.read_only or s.uuid == snapshot.uuid:
            continue
        chain = ancestry(s, by_uuid)
        if snapshot.parent_uuid in chain:
            d = chain.index(snapshot.parent_uuid)
            if best is None or d < best[0]:
                best = (d, s)
    if best is None:
        raise NotFound("The subvolume this snapshot was taken of no longer exists (nor "
                       "one rolled back from it); restore under a destination instead.")
    return best[1]
