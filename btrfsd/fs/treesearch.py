"""List every subvolume with one stream of BTRFS_IOC_TREE_SEARCH_V2 over the root tree,
as btrfs-progs does, instead of libbtrfsutil's several searches per subvolume; and tell,
for the price of a few leaves, whether a listing made earlier is still exact.

How a listing is known to be still exact (``unchanged``): every search result carries
the generation of the leaf it came from, and btrfs changes a leaf only in the running
transaction, copying it first if it is older, so a changed leaf (and its copy-on-write
ancestors) has at least that transaction's generation. A scan notes the running
transaction's id G when it starts (FS_INFO) and a digest of the items it read from
leaves of generation G or newer. Searching again with ``min_transid = G`` returns exactly
the items of such leaves today (the kernel skips whole subtrees older than G); if they
hash to the same digest, no leaf of the range changed since the scan began: a change
would have copied a leaf into this set, or changed, added or removed items of one in it.
A scan spans several ioctl calls, so it checks itself that way at its end: a change
while it ran (a subvolume caught mid-rename, say) makes it scan again, and a scan that
never settles is not reused. A later check needs no walk of the items: it repeats the
proven search call by call (``Recent``) and compares item counts and the bytes.

A subvolume's path also depends on the names of the directories it sits in (not in the
root tree until the next commit). The same reasoning, applied to the tree of each parent
subvolume holding such directories, tells that none of them was renamed: one search of
that tree's leaves of generation G or newer, when they fit one search call. Otherwise
(a parent being written to heavily) each directory is looked up again (INO_LOOKUP, one
per directory that holds subvolumes: snapper keeps each snapshot in one of its own).

Blocking; needs CAP_SYS_ADMIN. Raises BtrfsdError on ioctl failure.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

from ..constants import TOP_LEVEL_SUBVOLUME_ID
from ..errors import BtrfsdError, from_errno
from .info import Row, SubvolumeRows
from .ioctl import fs_generation, iowr

ROOT_TREE_OBJECTID = 1
FS_TREE_OBJECTID = TOP_LEVEL_SUBVOLUME_ID  # the top level's tree
FIRST_FREE_OBJECTID = 256
LAST_FREE_OBJECTID = 2**64 - 256  # -256ULL
ROOT_ITEM_KEY = 132
ROOT_BACKREF_KEY = 144
U64_MAX = 2**64 - 1

# struct btrfs_ioctl_search_key (7 x u64, 3 x u32 + u32 unused, 4 x u64 unused), then
# the v2 buf_size (u64).
_SEARCH_V2_HEAD = struct.Struct("=7Q4I4QQ")
BTRFS_IOC_TREE_SEARCH_V2 = iowr(17, _SEARCH_V2_HEAD.size)
# struct btrfs_ioctl_search_header
_ITEM_HEADER = struct.Struct("=QQQII")
# struct btrfs_root_ref
_ROOT_REF = struct.Struct("=QQH")
# struct btrfs_ioctl_ino_lookup_args
_INO_LOOKUP = struct.Struct("=QQ4080s")
BTRFS_IOC_INO_LOOKUP = iowr(18, _INO_LOOKUP.size)

# Fields of struct btrfs_root_item (packed; 439 bytes in the v2 layout), in one unpack:
# generation at 160, flags at 208, uuid/parent_uuid/received_uuid at 247, then ctime and
# otime (btrfs_timespec: u64 sec, u32 nsec) at 327.
_ROOT_ITEM_V1 = struct.Struct("=160xQ40xQ")
_ROOT_ITEM_V2 = struct.Struct("=160xQ40xQ31x16s16s16s32xQIQI")
ROOT_ITEM_V2_SIZE = 439

# Room for ~270 root items per call. A search restarts from its key cheaply, while a
# bigger buffer costs its zeroing on every call (and, above malloc's mmap threshold, a
# fresh mapping and its page faults: btrfsd/memory.py): in-process at 10,000 subvolumes
# the check that a listing is still exact took 4-5 ms with 2 MiB and 0.15 ms with this,
# a listing after a change 92-102 ms and 69-77 ms.
_BUF_SIZE = 128 * 1024


_NR_ITEMS = 7 * 8 + 2 * 4  # offset of nr_items in the search key


def _search_call(fd: int, min_key: tuple[int, int, int], max_key: tuple[int, int, int],
                 min_transid: int, nr_items: int, tree: int = ROOT_TREE_OBJECTID) -> bytearray:
    """One TREE_SEARCH_V2 call over tree ``tree`` (the root tree by default); the filled
    buffer. Raises BtrfsdError."""
    buf = bytearray(_SEARCH_V2_HEAD.size + _BUF_SIZE)
    _SEARCH_V2_HEAD.pack_into(
        buf, 0, tree, min_key[0], max_key[0], min_key[2], max_key[2],
        min_transid, U64_MAX, min_key[1], max_key[1], nr_items, 0, 0, 0, 0, 0, _BUF_SIZE,
    )
    try:
        fcntl.ioctl(fd, BTRFS_IOC_TREE_SEARCH_V2, buf, True)
    except OSError as e:
        what = "the root tree" if tree == ROOT_TREE_OBJECTID else f"subvolume {tree}'s tree"
        raise from_errno(e.errno or 0, f"Cannot search {what}: {e.strerror}.") from e
    return buf


def _after(key: tuple[int, int, int]) -> tuple[int, int, int] | None:
    """The key right after ``key`` (offset, then type, then objectid carry); None at the
    end of the key space."""
    objectid, type_, offset = key
    if offset < U64_MAX:
        return objectid, type_, offset + 1
    if type_ < 255:
        return objectid, type_ + 1, 0
    if objectid < U64_MAX:
        return objectid + 1, 0, 0
    return None


Key = tuple[int, int, int]


def _following(buf: bytearray, nr_items: int, end: int, last: Key, room: int) -> Key | None:
    """The key to search on from after a call's result (``nr_items`` items ending at
    ``end``, the last one's key ``last``); None when the kernel had no more to give:
    fewer than _MAX_ITEMS items came and more than ``room`` bytes were left (the biggest
    item the tree can hold would have fit)."""
    if nr_items == 0 or (nr_items < _MAX_ITEMS and len(buf) - end > room):
        return None
    return _after(last)


def _result(buf: bytearray, room: int) -> tuple[int, int, Key | None]:
    """A search call's result in ``buf`` (a walk of its item headers): its item count,
    where its items end, and the key to search on from (_following)."""
    nr_items = struct.unpack_from("=I", buf, _NR_ITEMS)[0]
    pos = _SEARCH_V2_HEAD.size
    unpack, head = _ITEM_HEADER.unpack_from, _ITEM_HEADER.size
    oid = typ = off = 0
    for _ in range(nr_items):
        _t, oid, off, typ, length = unpack(buf, pos)
        pos += head + length
    return nr_items, pos, _following(buf, nr_items, pos, (oid, typ, off), room)


@dataclass(frozen=True)
class Recent:
    """The items of one tree (between two keys) in leaves of generation ``generation`` or
    newer, as one search found them: each call's first key, item count and bytes used,
    and the digest of those bytes (search headers and data, as the kernel wrote them, in
    key order). ``_still`` searches again call by call: the same counts and a digest of
    the same lengths that matches mean the same items, with no walk of the items."""

    tree: int
    generation: int
    max_key: Key
    calls: tuple[tuple[Key, int, int], ...]
    digest: bytes


def _recent(fd: int, tree: int, min_key: Key, max_key: Key, generation: int, room: int,
            max_calls: int | None = None) -> Recent | None:
    """Search ``tree``'s items in leaves of ``generation`` or newer; None when that
    takes more than ``max_calls`` calls. ``room``: the biggest item the tree can hold
    (_result). Raises BtrfsdError."""
    h = hashlib.blake2b(digest_size=16)
    calls: list[tuple[Key, int, int]] = []
    key: Key | None = min_key
    while key is not None and key <= max_key:
        if max_calls is not None and len(calls) == max_calls:
            return None
        buf = _search_call(fd, key, max_key, generation, _MAX_ITEMS, tree)
        nr_items, end, following = _result(buf, room)
        calls.append((key, nr_items, end - _SEARCH_V2_HEAD.size))
        h.update(memoryview(buf)[_SEARCH_V2_HEAD.size:end])
        key = following
    return Recent(tree, generation, max_key, tuple(calls), h.digest())


def _still(fd: int, recent: Recent) -> bool:
    """Whether a search finds what ``recent`` found. Raises BtrfsdError."""
    h = hashlib.blake2b(digest_size=16)
    for key, nr_items, used in recent.calls:
        buf = _search_call(fd, key, recent.max_key, recent.generation, _MAX_ITEMS,
                           recent.tree)
        if struct.unpack_from("=I", buf, _NR_ITEMS)[0] != nr_items:
            return False
        # The same count of items and the same bytes up to the old end: the same items
        # (each header gives its item's length, so a grown item changes the bytes).
        h.update(memoryview(buf)[_SEARCH_V2_HEAD.size:_SEARCH_V2_HEAD.size + used])
    return h.digest() == recent.digest


def _ino_path(fd: int, tree_id: int, dirid: int) -> str:
    """Path of directory ``dirid`` inside subvolume ``tree_id`` ('' for its root)."""
    if dirid == FIRST_FREE_OBJECTID:
        return ""
    buf = bytearray(_INO_LOOKUP.pack(tree_id, dirid, b""))
    try:
        fcntl.ioctl(fd, BTRFS_IOC_INO_LOOKUP, buf, True)
    except OSError as e:
        raise from_errno(e.errno or 0, f"Cannot look up a subvolume's place: {e.strerror}.") from e
    name: bytes = _INO_LOOKUP.unpack(buf)[2]
    return name.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


_NO_UUID = bytes(16)


def format_uuid(raw: bytes) -> str:
    """16 raw bytes as a dashed UUID string; '' for all zeros (no UUID)."""
    if raw == _NO_UUID:
        return ""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# The root tree's part that lists subvolumes: their root items and backrefs.
_RANGE_MIN = (FIRST_FREE_OBJECTID, ROOT_ITEM_KEY, 0)
_RANGE_MAX = (LAST_FREE_OBJECTID, ROOT_BACKREF_KEY, U64_MAX)
# A root item's fields a listing shows: uuid, parent uuid, received uuid, generation,
# ctime, otime, read-only.
RootFields = tuple[str, str, str, int, float, float, bool]
Ref = tuple[int, int, str]  # parent subvolume id, directory inode in it, name
# Subvolume ids per block: a scan searches the range a block at a time (fixed id
# boundaries, so a change moves no other block's bounds) and takes over every block whose
# search returned the very bytes it did last time. ~75 KB of results per block: one
# search call each.
BLOCK_IDS = 128
_ROOM = 4096  # more free room than this at the end of a result: the search was complete
_MAX_ITEMS = 4096  # items per search call


@dataclass(frozen=True)
class Block:
    """What a scan made of one block of subvolume ids: the digest of the block's search
    result (leaf generations, keys and items, byte for byte), the newest leaf generation
    in it, the rows of the subvolumes it holds (as columns: fs/info.py), and what their
    paths were built from besides the block: (parent id, directory inode, the parent's
    path, the directory's path in the parent)."""

    digest: bytes
    newest: int
    rows: SubvolumeRows
    deps: tuple[tuple[int, int, str, str], ...]


@dataclass(frozen=True)
class RootScan:
    """A listing of every subvolume but the top level (by id), and what makes telling
    whether it is still exact (``unchanged``) and a next listing (``list_subvolumes``)
    cheap: the generation of the transaction that ran when the scan began (-1: the scan
    could not be proved consistent, it is never reused), the digest of the items it read
    from leaves of that generation or newer, the directory paths the subvolume paths were
    built from ((parent, directory inode) -> path inside the parent), the scan's blocks
    (by index; the items are their rows joined, not copies); once proven, the root tree's
    recent items, and for each parent subvolume whose recent items fit one search, those
    items as found when its directories' paths held: while a search finds them again, no
    directory in that tree was renamed (the module text)."""

    items: SubvolumeRows
    generation: int
    digest: bytes
    dirs: dict[tuple[int, int], str]
    blocks: dict[int, Block]
    root: Recent | None = None  # the root tree's recent items once proven
    parents: dict[int, Recent] = field(default_factory=dict)


def _unproven(items: SubvolumeRows) -> RootScan:
    return RootScan(items, -1, b"", {}, {})


# A whole tree's key space, for the parents' recent items. A search call (up to 128 KiB
# of items) costs about what 50 INO_LOOKUPs do (0.2-0.3 ms against ~6 us each, measured
# in-process): a parent's recent items may take one call per this many of its
# directories, else they are looked up one by one (a parent tree much written to in the
# last transaction: an idle filesystem keeps that transaction's leaves as its newest).
_TREE_MIN = (0, 0, 0)
_TREE_MAX = (U64_MAX, 255, U64_MAX)
_DIRS_PER_CALL = 50
# The biggest item a subvolume's tree can hold: a leaf of the biggest node size (an
# xattr can fill one); the root tree's items are root items and refs (_ROOM).
_PARENT_ROOM = 64 * 1024


def _parent_recent(fd: int, parent: int, generation: int, dirs: int) -> Recent | None:
    """``parent``'s tree items in leaves of ``generation`` or newer; None when they are
    dearer to search than its ``dirs`` directories are to look up, or the tree is gone."""
    try:
        return _recent(fd, parent, _TREE_MIN, _TREE_MAX, generation, _PARENT_ROOM,
                       1 + dirs // _DIRS_PER_CALL)
    except BtrfsdError:
        return None


def _holds(fd: int, recent: Recent) -> bool:
    try:
        return _still(fd, recent)
    except BtrfsdError:  # the tree is gone
        return False


def _held(fd: int, parents: dict[int, Recent]) -> dict[int, Recent]:
    """The parents (of RootScan.parents) whose trees are as they were."""
    return {parent: recent for parent, recent in parents.items() if _holds(fd, recent)}


def _dirs_hold(fd: int, dirs: dict[tuple[int, int], str], held: Iterable[int]) -> bool:
    """Whether the directories of parents other than ``held`` are where ``dirs`` says."""
    skip = set(held)
    try:
        return all(_ino_path(fd, parent, dirid) == path
                   for (parent, dirid), path in dirs.items() if parent not in skip)
    except BtrfsdError:  # a parent or directory went away since: not the same listing
        return False


# hash() of bytes is SipHash-1-3 keyed with this process's random secret, unless the
# interpreter was started with PYTHONHASHSEED set: then the key follows from a number
# (0: no randomization at all) that may be written down somewhere.
_KEYED_HASH = (bool(sys.flags.hash_randomization)
               and os.environ.get("PYTHONHASHSEED", "random") == "random")


def block_digest(results: list[memoryview]) -> bytes:
    """The digest of a block's search results, which says whether its bytes are what
    they were (then its rows are taken over). A keyed hash: Python's own hash of bytes,
    SipHash-1-3 with this process's random secret key, ~6x faster than blake2b here (the
    ~5 MB of 10,000 subvolumes' items: 2.5 ms against 15, each time a listing changes;
    docs/benchmarks.md, issue 11). A local user who names subvolumes cannot make a
    block's new bytes collide with its old ones without that key; by chance they do
    once in 2^64. With PYTHONHASHSEED set the key can be known: blake2b then."""
    if not _KEYED_HASH:
        h = hashlib.blake2b(digest_size=16)
        for view in results:
            h.update(view)
        return h.digest()
    return hash(b"".join(results)).to_bytes(8, "little", signed=True)


def _digest(items: Iterable[tuple[int, int, int, int, memoryview]]) -> bytes:
    """What _recent hashes of the same items: each one's search header, as the kernel
    writes it, then its data."""
    h = hashlib.blake2b(digest_size=16)
    pack = _ITEM_HEADER.pack
    for transid, oid, typ, off, data in items:
        h.update(pack(transid, oid, off, typ, len(data)))
        h.update(data)
    return h.digest()


def unchanged(fd: int, scan: RootScan) -> bool:
    """Whether ``scan`` is still exact for the filesystem of ``fd`` (the module text says
    how this is known). Raises BtrfsdError."""
    # A generation lower than the scan's: another copy of the filesystem (an image or
    # a volume snapshot rolled back and mounted in its place), whose numbers repeat
    if scan.generation < 0 or _start_generation(fd) < scan.generation:
        return False
    if scan.root is None or not _still(fd, scan.root):
        return False
    return _dirs_hold(fd, scan.dirs, _held(fd, scan.parents))


def _root_fields(data: memoryview, fmt: Callable[[bytes], str]) -> RootFields:
    if len(data) >= ROOT_ITEM_V2_SIZE:
        generation, flags, u, pu, ru, cs, cn, os_, on = _ROOT_ITEM_V2.unpack_from(data)
        return (format_uuid(u), fmt(pu), fmt(ru), generation, cs + cn / 1e9,
                os_ + on / 1e9, bool(flags & 1))
    generation, flags = _ROOT_ITEM_V1.unpack_from(data)  # an old format: no uuids, times
    return ("", "", "", generation, 0.0, 0.0, bool(flags & 1))


# Scans in a row that changes overtook before the last is returned unproven.
_SCAN_TRIES = 3


def _start_generation(fd: int) -> int:
    try:
        generation = fs_generation(fd)
    except OSError as e:
        raise from_errno(e.errno or 0, f"Cannot read the filesystem's generation: "
                                       f"{e.strerror}.") from e
    return -1 if generation is None else generation


def list_subvolumes(fd: int, earlier: RootScan | None = None) -> RootScan:
    """Every subvolume of the filesystem holding ``fd`` except the top level, by id, with
    paths from the top level, as of one moment: a scan that a change overtook is made
    again (at most _SCAN_TRIES times; then it is returned marked unproven). With
    ``earlier``, a proven scan of the same filesystem, each block of ids whose search
    result is byte for byte what it was is taken over with its rows (when the paths they
    were built from are the same), so only changed blocks are decoded. Raises
    BtrfsdError.
    """
    if earlier is not None and earlier.generation < 0:
        earlier = None  # unproven: nothing of it is taken over
    for _ in range(_SCAN_TRIES):
        start = _start_generation(fd)
        if earlier is not None and start < earlier.generation:
            earlier = None  # another copy of the filesystem (see unchanged)
        # directories of parents whose trees did not change are not looked up again
        held = _held(fd, earlier.parents) if earlier is not None else {}
        known = ({where: path for where, path in earlier.dirs.items() if where[0] in held}
                 if earlier is not None else {})
        scan = _Scan(fd, earlier.blocks if earlier is not None else {}, start, known).run()
        if start < 0:
            continue
        parents = Counter(p for p, _dirid in scan.dirs)
        held = {p: held[p] for p in parents.keys() & held.keys()}
        # The other parents' recent items stand for the paths looked up now only if
        # found the same on both sides of the closing look-ups: no change in between.
        before = {p: _parent_recent(fd, p, start, n) for p, n in parents.items()
                  if p not in held}
        # the closing check: what the scan read of recent leaves is what they hold now
        root = _recent(fd, ROOT_TREE_OBJECTID, _RANGE_MIN, _RANGE_MAX, start, _ROOM)
        if (root is not None and root.digest == scan.digest
                and all(_holds(fd, r) for r in held.values())
                and _dirs_hold(fd, scan.dirs, held)
                and all(r is None or _holds(fd, r) for r in before.values())):
            return replace(scan, root=root, parents={
                **held, **{p: r for p, r in before.items() if r is not None}})
    return _unproven(scan.items)


def _search_block(fd: int, index: int) -> list[memoryview]:
    """The raw results (search headers and items, in key order) of block ``index``'s ids,
    one buffer per search call. Raises BtrfsdError."""
    lo = FIRST_FREE_OBJECTID + index * BLOCK_IDS
    min_key = max((lo, 0, 0), _RANGE_MIN)
    max_key = min((lo + BLOCK_IDS - 1, 255, U64_MAX), _RANGE_MAX)
    results: list[memoryview] = []
    while True:
        buf = _search_call(fd, min_key, max_key, 0, _MAX_ITEMS)
        nr_items, end, following = _result(buf, _ROOM)
        if nr_items == 0:
            return results
        results.append(memoryview(buf)[_SEARCH_V2_HEAD.size:end])
        if following is None or following > max_key:
            return results
        min_key = following


def _next_block(fd: int, index: int) -> int | None:
    """The index of the first block after ``index`` holding any item of the range, or
    None. Raises BtrfsdError."""
    lo = FIRST_FREE_OBJECTID + (index + 1) * BLOCK_IDS
    if (lo, 0, 0) > _RANGE_MAX:
        return None
    buf = _search_call(fd, max((lo, 0, 0), _RANGE_MIN), _RANGE_MAX, 0, 1)
    if struct.unpack_from("=I", buf, _NR_ITEMS)[0] == 0:
        return None
    oid = _ITEM_HEADER.unpack_from(buf, _SEARCH_V2_HEAD.size)[1]
    return int((oid - FIRST_FREE_OBJECTID) // BLOCK_IDS)


def _items(results: list[memoryview]) -> Iterator[tuple[int, int, int, int, memoryview]]:
    """(leaf generation, objectid, type, offset, data) of each item of raw results."""
    unpack, head = _ITEM_HEADER.unpack_from, _ITEM_HEADER.size
    for view in results:
        pos, end = 0, len(view)
        while pos < end:
            transid, oid, off, typ, length = unpack(view, pos)
            pos += head
            yield transid, oid, typ, off, view[pos:pos + length]
            pos += length


def _block_of(sid: int) -> int:
    return (sid - FIRST_FREE_OBJECTID) // BLOCK_IDS


class _Scan:
    """One walk of the range, a block at a time (see list_subvolumes); ``start``: the
    running transaction's id when it began (-1: unknown)."""

    def __init__(self, fd: int, earlier: dict[int, Block], start: int,
                 known: dict[tuple[int, int], str]) -> None:
        self.fd, self.earlier, self.start = fd, earlier, start
        self.known = known  # directory paths that need no look-up (list_subvolumes)
        self.roots: dict[int, RootFields] = {}  # of decoded blocks
        self.refs: dict[int, Ref] = {}  # of decoded blocks
        self.decoded: dict[int, tuple[bytes, int, list[int]]] = {}  # digest, newest, ids
        self.kept: dict[int, Block] = {}  # blocks whose bytes are as in ``earlier``
        self.rows_of: dict[int, dict[int, str]] = {}  # kept block -> paths by id
        self.paths: dict[int, str] = {FS_TREE_OBJECTID: ""}
        # Snapshots pile up in a few directories: one INO_LOOKUP per (subvolume,
        # directory) instead of one per snapshot.
        self.dirs: dict[tuple[int, int], str] = {}
        self.uuids: dict[bytes, str] = {}  # snapshots of one source share a parent uuid

    def _fmt(self, raw: bytes) -> str:
        text = self.uuids.get(raw)
        if text is None:
            text = self.uuids[raw] = format_uuid(raw)
        return text

    def run(self) -> RootScan:
        """Raises BtrfsdError."""
        recent: list[tuple[int, int, int, int, memoryview]] = []  # from leaves >= start
        index: int | None = 0
        while index is not None:
            results = _search_block(self.fd, index)
            if results:
                self._take(index, results, recent, reuse=True)
                index += 1
            else:  # an empty block: skip to the next one holding anything
                index = _next_block(self.fd, index)
        scan_digest = _digest(recent)
        del recent
        # Paths, taking every kept block's rows as they are. The rows were built from
        # the same items; when every path they were built from (their deps) is what it
        # is now, they are exact: each row's path is still its parent's path plus its
        # directory's plus its name, and the tree has only one such assignment. A kept
        # block whose deps changed (a directory or parent renamed) is decoded after all
        # and the paths are made again.
        while True:
            self.paths, self.dirs = {FS_TREE_OBJECTID: ""}, {}
            changed = [i for i in self.kept if not self._holds(i)]
            if not changed:
                break
            for i in changed:
                self._redecode(i)
        items: list[SubvolumeRows] = []
        blocks: dict[int, Block] = {}
        for index in sorted({*self.kept, *self.decoded}):
            block = blocks[index] = self._block(index)
            items.append(block.rows)
        return RootScan(SubvolumeRows.join(items), self.start, scan_digest, self.dirs, blocks)

    def _take(self, index: int, results: list[memoryview],
              recent: list[tuple[int, int, int, int, memoryview]], reuse: bool) -> None:
        """Keep block ``index`` as it was when its bytes are the same (and ``reuse``),
        else decode them; items of leaves as new as the scan go to ``recent``."""
        digest, start = block_digest(results), self.start
        old = self.earlier.get(index)
        if reuse and old is not None and old.digest == digest:
            self.kept[index] = old
            if old.newest >= start >= 0:  # its items still count for the scan's digest
                recent.extend(i for i in _items(results) if i[0] >= start)
            return
        newest, sids = 0, []
        ref_head, ref_size = _ROOT_REF.unpack_from, _ROOT_REF.size
        roots, refs, fmt = self.roots, self.refs, self._fmt
        for item in _items(results):
            transid, oid, typ, off, data = item
            if transid > newest:
                newest = transid
            if transid >= start >= 0:
                recent.append(item)
            if typ == ROOT_ITEM_KEY:
                roots[oid] = _root_fields(data, fmt)
                sids.append(oid)
            elif typ == ROOT_BACKREF_KEY:
                dirid, _seq, name_len = ref_head(data)
                refs[oid] = (off, dirid, str(data[ref_size:ref_size + name_len], "utf-8",
                                             "surrogateescape"))
        self.decoded[index] = (digest, newest, sids)

    def _redecode(self, index: int) -> None:
        """Decode a kept block after all: a path its rows were built from changed.
        (Its items' part in the scan's digest was taken when it was first searched: a
        change since makes the scan's closing check fail, and the scan is made again.)"""
        del self.kept[index]
        self.rows_of.pop(index, None)
        self._take(index, _search_block(self.fd, index), [], reuse=False)

    def _dir_path(self, parent: int, dirid: int) -> str:
        where = self.dirs.get((parent, dirid))
        if where is None:
            where = self.known.get((parent, dirid))
            if where is None:
                where = _ino_path(self.fd, parent, dirid)
            self.dirs[(parent, dirid)] = where
        return where

    def _holds(self, index: int) -> bool:
        """Whether kept block ``index``'s deps are what the paths are now (see run).
        Raises BtrfsdError."""
        try:
            return all(self.path_of(parent) == parent_path
                       and self._dir_path(parent, dirid) == dir_path
                       for parent, dirid, parent_path, dir_path in self.kept[index].deps)
        except (KeyError, BtrfsdError):
            return False  # a parent or a directory on the way went away

    def path_of(self, sid: int) -> str:
        """The path of subvolume ``sid`` from the top level (a kept block's row has its
        path). Raises KeyError when it or a parent on the way has no backref (being
        deleted), BtrfsdError."""
        # up to the first known path, then down: no recursion (deep nesting) and no
        # closure calling itself (a reference cycle that kept every scan's dicts alive)
        chain: list[int] = []
        while sid not in self.paths:
            index = _block_of(sid)
            if index in self.kept:
                rows = self.rows_of.get(index)
                if rows is None:
                    rows = self.rows_of[index] = self.kept[index].rows.paths_by_id()
                self.paths[sid] = rows[sid]  # KeyError: it had no path then
                break
            chain.append(sid)
            sid = self.refs[sid][0]
        base = self.paths[sid]
        for child in reversed(chain):
            parent, dirid, name = self.refs[child]
            rel = self._dir_path(parent, dirid) + name
            base = self.paths[child] = f"{base}/{rel}" if base else rel
        return base

    def _block(self, index: int) -> Block:
        """Block ``index`` of the new scan: kept as it was while its paths hold, else
        built from what was decoded. Raises BtrfsdError."""
        if index in self.kept:
            return self.kept[index]  # its deps hold (run)
        digest, newest, sids = self.decoded[index]
        rows: list[Row] = []
        deps: dict[tuple[int, int], tuple[str, str]] = {}
        for sid in sids:
            if sid not in self.refs:
                continue  # orphan: deleted, waiting for the cleaner
            try:
                path = self.path_of(sid)
            except KeyError:
                continue
            parent, dirid, _name = self.refs[sid]
            deps[(parent, dirid)] = (self.paths[parent], self._dir_path(parent, dirid))
            u, pu, ru, generation, ctime, otime, ro = self.roots[sid]
            rows.append((sid, parent, path, u, pu, ru, generation, ctime, otime, ro))
        return Block(digest, newest, SubvolumeRows(rows),
                     tuple((p, d, pp, dp) for (p, d), (pp, dp) in deps.items()))
