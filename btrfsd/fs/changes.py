"""Turn the commands of an incremental send stream into a list of changed paths.

An incremental stream says how to turn the old snapshot into the new one, inode by
inode, with paths as they are at that moment of replaying it: a directory renamed early
makes later commands name its contents by the new name, and inodes on their way
(replaced, deleted, waiting for their place) park under orphan names ``o<ino>-<gen>-<n>``
at the top. So the reader keeps a small overlay of the tree, only of the entries the
stream touched: each entry knows its parent, its name and where it was in the old
snapshot (its origin; None for one the stream made). Untouched entries below a renamed
directory are never listed: they moved with it.

Pure bookkeeping (no kernel calls); raises BadStream for a stream that names what it
never made or already moved away.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import sendstream as s
from .sendstream import Attrs, BadStream

# What a changed path is (the ``change`` column), in the order rows for one path sort.
DELETED, ADDED, LINKED, RENAMED, MODIFIED, METADATA = (
    "deleted", "added", "linked", "renamed", "modified", "metadata")
_ORDER = {k: i for i, k in enumerate((DELETED, ADDED, LINKED, RENAMED, MODIFIED, METADATA))}
# What an inode is (the ``type`` column).
FILE, DIR, SYMLINK, OTHER = "file", "dir", "symlink", "other"

_CREATES = {s.MKFILE: FILE, s.MKDIR: DIR, s.SYMLINK: SYMLINK, s.MKNOD: OTHER,
            s.MKFIFO: OTHER, s.MKSOCK: OTHER}
_DATA = frozenset({s.WRITE, s.CLONE, s.TRUNCATE, s.UPDATE_EXTENT, s.FALLOCATE,
                   s.ENCODED_WRITE})
_META = frozenset({s.CHMOD, s.CHOWN, s.UTIMES, s.SET_XATTR, s.REMOVE_XATTR, s.FILEATTR,
                   s.ENABLE_VERITY})


class _Inode:
    __slots__ = ("data", "meta", "new", "type")

    def __init__(self, new: bool, type_: str) -> None:
        self.new = new
        self.type = type_
        self.data = False
        self.meta = False


class _Entry:
    __slots__ = ("children", "inode", "moved", "name", "origin", "parent")

    def __init__(self, inode: _Inode, parent: _Entry | None, name: str,
                 origin: str | None) -> None:
        self.inode = inode
        self.parent = parent  # None once unlinked (and for the root)
        self.name = name
        self.origin = origin  # path in the old snapshot; None: made by the stream
        self.moved = False  # renamed itself (not only with a directory above it)
        self.children: dict[str, _Entry | None] | None = None  # None value: moved away


@dataclass
class Change:
    """One changed path. ``path`` is in the new snapshot (in the old one for a deleted
    path); ``old_path`` is where it was in the old one when that differs (renamed, or
    inside a renamed directory; for ``linked``: a name the file had), else ''. ``data``
    and ``metadata`` tell what of an existing file changed. ``type`` and ``size`` are
    filled in by whoever can look at the snapshots ('' and 0 until then)."""

    path: str
    change: str
    old_path: str = ""
    type: str = ""
    size: int = 0
    data: bool = False
    metadata: bool = False

    def sort_key(self) -> tuple[str, int]:
        return self.path, _ORDER[self.change]


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


class ChangeTracker:
    """Give it every command (``apply``, a sendstream handler); ``changes()`` at the end."""

    def __init__(self) -> None:
        self._root = _Entry(_Inode(False, DIR), None, "", "")
        self._entries: list[_Entry] = []

    # -- the overlay ---------------------------------------------------------------
    def _child(self, cur: _Entry, name: str, shown: str) -> _Entry:
        kids = cur.children
        if kids is None:
            kids = cur.children = {}
        found = kids.get(name, cur)  # cur: not looked at yet
        if found is None:
            raise BadStream(f"The send stream names {shown!r} after moving it away.")
        if found is not cur:
            return found
        if cur.origin is None:  # made by the stream: all its entries came with it
            raise BadStream(f"The send stream names {shown!r}, which it never made.")
        origin = f"{cur.origin}/{name}" if cur.origin else name
        entry = _Entry(_Inode(False, ""), cur, name, origin)
        kids[name] = entry
        self._entries.append(entry)
        return entry

    def _resolve(self, raw: bytes) -> _Entry:
        path = _text(raw)
        cur = self._root
        for name in path.split("/"):
            if name:
                cur = self._child(cur, name, path)
        return cur

    def _place(self, raw: bytes) -> tuple[_Entry, str]:
        """The directory entry a new name goes into, and the name."""
        path = _text(raw)
        head, _, name = path.rpartition("/")
        if not name:
            raise BadStream(f"The send stream names an empty path ({path!r}).")
        parent = self._resolve(head.encode("utf-8", "surrogateescape")) if head else self._root
        return parent, name

    def _detach(self, entry: _Entry) -> None:
        parent = entry.parent
        if parent is None:
            raise BadStream(f"The send stream removes {entry.name!r} twice.")
        assert parent.children is not None
        parent.children[entry.name] = None
        entry.parent = None

    def _attach(self, entry: _Entry, parent: _Entry, name: str) -> None:
        kids = parent.children
        if kids is None:
            kids = parent.children = {}
        there = kids.get(name)
        if there is not None and there.parent is not None:
            there.parent = None  # replaced: it is gone from here
        kids[name] = entry
        entry.parent, entry.name = parent, name

    @staticmethod
    def _path(raw: Attrs, key: int) -> bytes:
        value = raw.get(key)
        if value is None:
            raise BadStream(f"A command of the send stream lacks its path (attribute {key}).")
        return value

    # -- commands ------------------------------------------------------------------------
    def apply(self, cmd: int, attrs: Attrs) -> None:
        """Take one command of the stream. Raises BadStream."""
        if cmd in _META:
            self._resolve(self._path(attrs, s.A_PATH)).inode.meta = True
        elif cmd in _DATA:
            self._resolve(self._path(attrs, s.A_PATH)).inode.data = True
        elif cmd in _CREATES:
            parent, name = self._place(self._path(attrs, s.A_PATH))
            entry = _Entry(_Inode(True, _CREATES[cmd]), None, name, None)
            self._attach(entry, parent, name)
            self._entries.append(entry)
        elif cmd == s.RENAME:
            entry = self._resolve(self._path(attrs, s.A_PATH))
            parent, name = self._place(self._path(attrs, s.A_PATH_TO))
            self._detach(entry)
            self._attach(entry, parent, name)
            entry.moved = True
        elif cmd == s.LINK:
            target = self._resolve(self._path(attrs, s.A_PATH_LINK))
            parent, name = self._place(self._path(attrs, s.A_PATH))
            entry = _Entry(target.inode, None, name, None)
            if target.inode.type == "":
                target.inode.type = FILE  # a hard link: not a directory
            self._attach(entry, parent, name)
            self._entries.append(entry)
        elif cmd in (s.UNLINK, s.RMDIR):
            entry = self._resolve(self._path(attrs, s.A_PATH))
            if entry is self._root:
                raise BadStream("The send stream removes the subvolume's root.")
            if entry.inode.type == "" and cmd == s.RMDIR:
                entry.inode.type = DIR
            self._detach(entry)
        # SUBVOL/SNAPSHOT open the stream; nothing else is left (END ends it)

    # -- the result ----------------------------------------------------------------------
    def _current(self, entry: _Entry) -> str | None:
        """The entry's path now; None when it (or a directory above it) is gone."""
        names = []
        cur: _Entry | None = entry
        while cur is not None and cur.parent is not None:
            names.append(cur.name)
            cur = cur.parent
        if cur is not self._root:
            return None
        return "/".join(reversed(names))

    def _moves(self, now: dict[int, str | None]) -> dict[int, str]:
        """A file moved to another directory comes as a link of the new name and an
        unlink of the old one: pair them (entry id of the new name -> old path)."""
        gone: dict[int, list[str]] = {}
        for e in self._entries:
            if e.origin is not None and now[id(e)] is None:
                gone.setdefault(id(e.inode), []).append(e.origin)
        moves: dict[int, str] = {}
        for e in self._entries:
            if e.origin is None and not e.inode.new and now[id(e)] is not None:
                left = gone.get(id(e.inode))
                if left:
                    moves[id(e)] = left.pop(0)
        return moves

    def changes(self) -> list[Change]:
        """Every changed path, sorted by path (for one path: deleted before added)."""
        rows: list[Change] = []
        first_name: dict[int, str] = {}
        now = {id(e): self._current(e) if e.parent is not None else None
               for e in self._entries}
        for e in self._entries:
            if e.origin is not None and id(e.inode) not in first_name:
                first_name[id(e.inode)] = e.origin
        moves = self._moves(now)
        paired = set(moves.values())
        for e in self._entries:
            ino = e.inode
            path = now[id(e)]
            if e.origin is None:
                if path is None:
                    continue  # made and removed again on the way
                if ino.new:
                    rows.append(Change(path, ADDED, type=ino.type))
                elif id(e) in moves:
                    rows.append(Change(path, RENAMED, moves[id(e)], ino.type, data=ino.data,
                                       metadata=ino.meta))
                else:
                    rows.append(Change(path, LINKED, first_name.get(id(ino), ""), ino.type))
            elif path is None:
                if e.origin not in paired:
                    rows.append(Change(e.origin, DELETED, type=ino.type))
            else:
                moved = path != e.origin
                kind = (RENAMED if e.moved and moved else MODIFIED if ino.data
                        else METADATA if ino.meta else None)
                if kind is not None:
                    rows.append(Change(path, kind, e.origin if moved else "", ino.type,
                                       data=ino.data, metadata=ino.meta))
        rows.sort(key=Change.sort_key)
        return rows
