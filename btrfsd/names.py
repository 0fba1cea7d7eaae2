"""How file names, paths and free text cross the bus.

In the kernel a name is bytes, and any byte but '/' and NUL may be in it; D-Bus strings
must be valid UTF-8. Inside btrfsd a name is a ``str`` decoded with ``surrogateescape``
(Python's own convention: an undecodable byte becomes a lone surrogate), so it can be
encoded back to the exact bytes.

On the bus (documented in docs/api.md):
- a **path** (or a mount point, device, subvolume path) is its bytes as UTF-8 text with
  every byte that is not part of valid UTF-8 written ``\\xNN`` and every backslash
  written ``\\\\``; the form is exact, so a path taken from any reply can be handed back
  to act on the same object (``from_bus``). Paths without a backslash or a bad byte,
  which is nearly all of them, are unchanged;
- **free text** (messages, labels, descriptions) shows a bad byte as ``\\xNN`` and is
  otherwise unchanged (it is read by people, never handed back).
"""

from __future__ import annotations

_HEX = frozenset(b"0123456789abcdefABCDEF")


def to_bus(path: str) -> str:
    """A name or path as it goes on the bus (always valid UTF-8; exact)."""
    if path.isascii() and "\\" not in path:
        return path
    raw = path.encode("utf-8", "surrogateescape")
    return raw.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def from_bus(path: str) -> str:
    """A path a caller sent back to the internal form (``to_bus`` reversed). A backslash
    followed by neither a backslash nor ``xNN`` stands for itself."""
    if "\\" not in path:
        return path
    raw = path.encode("utf-8", "surrogateescape")
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == 0x5C and i + 1 < n and raw[i + 1] == 0x5C:
            out.append(0x5C)
            i += 2
        elif (c == 0x5C and i + 3 < n and raw[i + 1] == 0x78
              and raw[i + 2] in _HEX and raw[i + 3] in _HEX):
            out.append(int(raw[i + 2:i + 4], 16))
            i += 4
        else:
            out.append(c)
            i += 1
    return out.decode("utf-8", "surrogateescape")


def display(text: str) -> str:
    """Free text as it goes on the bus: a bad byte shows as ``\\xNN`` (valid UTF-8)."""
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
