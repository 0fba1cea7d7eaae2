"""plain.py draws btrfsctl's tables, lines and JSON byte for byte as rich and json.dumps
did, or declines (None) and leaves them to rich (no daemon needed)."""

from __future__ import annotations

import io
import json
import re
import sys
from typing import Any

import pytest
from rich.console import Console
from rich.table import Table

from btrfsd.cli import output, plain

COLUMNS = plain.SUBVOLUME_COLUMNS
TIME = "2026-11-28 10:26:20"


def row(path: str, created: str = TIME, ident: int = 257) -> list[str]:
    return [str(ident), "256", path, "yes", "no", created]


def rich_console(width: int, terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=terminal,
                      color_system="standard" if terminal else None)
    return console, out


def rich_table(columns: list[str], rows: list[list[str]], width: int, terminal: bool) -> str:
    """What output.table drew before plain.py (the same Table and Console settings)."""
    console, out = rich_console(width, terminal)
    t = Table(show_edge=False, header_style="bold")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*r)
    console.print(t)
    return out.getvalue()


SAMPLES = {
    "snapshots": [row(f"data/.snapshots/2026112{k}T043000Z", ident=257 + k) for k in range(5)],
    "many": [row(f"d/.snapshots/s{k:05d}", ident=1000 + k) for k in range(1000)],
    "empty": [],
    "no time": [row("data/s", created="-")],
    "inner spaces": [row("data/a b  c"), row("x y")],
    "punctuation": [row("d/a-b_c.d+e=f,g;h!i@j#k$l%m^n&o*p(q)r{s}t|u~v`w'x\"y?z\\")],
    "long name": [row("d/" + "n" * 200)],
    "empty cell": [["", "", "", "", "", ""]],
    "time-like": [row("d/10:26:20"), row("d/snap:1")],
    "bus form of a bad byte": [row("d/bad\\xffname"), row("d/back\\\\slash")],
}
# cells plain.py must leave to rich: markup, emoji codes, non-ASCII (wide, combining),
# control characters, spaces at an end, colons that are not a time's
ODD = ["d/[bold]x[/bold]", "d/[x", "d/:thumbs_up:", "d/:100:", "d/ü", "d/日本語",
       "d/e\u0301", "d/a\tb", "d/a\nb", " lead", "trail ", "d/a| b",
       "d/x:", "d/:smile"]


@pytest.mark.parametrize("terminal", [False, True], ids=["pipe", "terminal"])
@pytest.mark.parametrize("width", [250, 120, 80, 60, 20])
@pytest.mark.parametrize("name", list(SAMPLES))
def test_table_is_rich_or_declines(name: str, width: int, terminal: bool) -> None:
    rows = SAMPLES[name]
    mine = plain.table(COLUMNS, rows, width, terminal)
    if mine is not None:
        assert mine == rich_table(COLUMNS, rows, width, terminal)


def test_the_usual_tables_are_drawn_without_rich() -> None:
    # the point of it all: the common cases do not fall back
    for name in ("snapshots", "many", "empty", "no time", "inner spaces",
                 "bus form of a bad byte"):
        assert plain.table(COLUMNS, SAMPLES[name], 250, False) is not None, name
        assert plain.table(COLUMNS, SAMPLES[name], 250, True) is not None, name
    assert plain.table(COLUMNS, SAMPLES["snapshots"], 120, True) is not None


def test_narrow_consoles_are_left_to_rich() -> None:
    # wider than the console: rich shrinks and folds columns
    assert plain.table(COLUMNS, SAMPLES["snapshots"], 80, True) is None
    assert plain.table(COLUMNS, SAMPLES["long name"], 250, False) is None


@pytest.mark.parametrize("cell", ODD)
def test_odd_names_are_left_to_rich(cell: str) -> None:
    assert plain.table(COLUMNS, [row("d/ok"), row(cell)], 250, False) is None


@pytest.mark.parametrize("cell", ODD)
def test_output_table_equals_rich_for_odd_names(cell: str, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    rows = [row("d/ok"), row(cell)]
    for width, terminal in ((250, False), (100, True), (40, True)):
        console, out = rich_console(width, terminal)
        monkeypatch.setattr(output, "console", console)
        output.table(None, COLUMNS, rows)
        assert out.getvalue() == rich_table(COLUMNS, rows, width, terminal)


def test_output_table_uses_plain_and_keeps_titles_for_rich(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    rows = SAMPLES["snapshots"]
    console, out = rich_console(250, False)
    monkeypatch.setattr(output, "console", console)
    output.subvolume_table([{"id": int(r[0]), "parent_id": 256, "path": r[2],
                             "read_only": True, "is_snapshot": False, "otime": 0}
                            for r in rows])
    expected = [[r[0], r[1], r[2], "yes", "no", "-"] for r in rows]
    assert out.getvalue() == rich_table(COLUMNS, expected, 250, False)
    out.truncate(0)
    out.seek(0)
    output.table("Quotas (simple)", ["A"], [["1"]])  # plain.py draws no titles
    expected_console, expected = rich_console(250, False)
    t = Table(title="Quotas (simple)", show_edge=False, header_style="bold")
    t.add_column("A", overflow="fold")
    t.add_row("1")
    expected_console.print(t)
    assert out.getvalue() == expected.getvalue()


def test_wrong_cells_are_left_to_rich() -> None:
    assert plain.table(["A", "B"], [["1"]], 250, False) is None
    assert plain.table(["A"], [[1]], 250, False) is None  # type: ignore[list-item]


def test_no_emoji_code_is_two_digits() -> None:
    # plain._times_only lets a time's ":MM:" through: rich must leave it alone too
    from rich._emoji_codes import EMOJI

    assert not [name for name in EMOJI if re.fullmatch(r"\d\d", name)]
    console, out = rich_console(250, False)
    for mm in range(60):
        console.print(f"10:{mm:02d}:20")
    assert out.getvalue() == "".join(f"10:{mm:02d}:20\n" for mm in range(60))


def test_times_only_is_the_regular_expression_it_replaced() -> None:
    # plain.py no longer imports re (~10 ms at start-up); this was its check
    bad_colon = re.compile(r":(?!\d\d(?::\d\d)?(?:\||\Z))")
    alphabet = ":01|#"  # "#": plain's own marker
    texts = [""]
    for k in range(7):  # every string of up to 7 of these characters
        texts += [t + c for t in texts[-len(alphabet) ** k:] for c in alphabet]
    texts += ["10:26:20", "2026-11-28 10:26:20", "a:12:34|b", "1:2:3:4", ":12:34:56",
              "x:12", "12:34|", "|:00", "x:00:00:00", "a:59:59|b:00|c:1", "a:98:76:54|"]
    for text in texts:
        assert plain._times_only(text) == (bad_colon.search(text) is None), text
    # re's \d takes other scripts' digits too; _plain has refused non-ASCII before
    assert not plain._plain("x:١٢") and not plain._plain("x:1²")


@pytest.mark.parametrize("text", [
    "Created read-only snapshot /srv/data/.snapshots/20261122T043000Z",
    "Created writable snapshot /srv/a b", "x" * 250, "x" * 251, "Created [bold]x",
    "Created :smile: x", "Created /srv/ü", "Created /srv/10:26:20", "Created /a\tb"])
def test_lines_are_rich_or_declined(text: str) -> None:
    for width, terminal in ((250, False), (80, False), (250, True)):
        mine = plain.line(text, width, terminal)
        if mine is not None:
            console, out = rich_console(width, terminal)
            console.print(text)
            assert mine == out.getvalue()
    assert plain.line(text, 250, True) is None  # a terminal: rich highlights


def test_common_lines_are_plain() -> None:
    assert plain.line("Created read-only snapshot /srv/.snapshots/20261122T043000Z", 250,
                      False) is not None


RECORD = {"ctime": 1795861580127995, "id": 257, "path": "data/.snapshots/s",
          "read_only": True, "received_uuid": "", "is_snapshot": False}


@pytest.mark.parametrize("data", [
    [RECORD, {**RECORD, "id": 258, "path": "ü \"q\" \\ {x} \udcff \n"}],
    [RECORD], [], {}, [{}], RECORD, {"k{}": 1}, {"a": [1], "b": {"c": None}},
    [{"a": 1}, {"b": 2}], [{"a": 1}, {"a": "x"}], {"x": None}, {"f": 1.5}, [1, "x"],
    [{"b": 1, "a": True}, {"a": False, "b": 2}], "text", None, {1: 2}, [{1: 2}],
    {"v": 2**70}, {"e": []},
    # one value in a column is encoded once; equal values of other types are not one
    [{"a": 1, "b": "x"}, {"a": 1, "b": "x"}, {"a": 1, "b": "x"}], [{"a": 1}, {"a": True}],
    [{"a": True}, {"a": 1}], [{"a": 0}, {"a": False}], [{"a": 1}, {"a": 1.0}],
])
def test_dumps_is_json_dumps(data: Any) -> None:
    assert plain.dumps(data) == json.dumps(data, indent=2, sort_keys=True)


def test_records_json_is_dumps_of_the_rows() -> None:
    columns = [[257, 258], [256, 256], ["a", "b \u00e9"], ["u1", "u2"], ["", "p"], ["", ""],
               [7, 8], [1, 2], [3, 4], [True, False], [True, True], [0, 1], [0, 2], [0, 3],
               [0, 4]]
    rows = plain.subvolume_rows(columns)
    assert plain.records_json(plain.SUBVOLUME_FIELDS, columns) == json.dumps(
        rows, indent=2, sort_keys=True)
    empty: list[list[Any]] = [[] for _ in plain.SUBVOLUME_FIELDS]
    assert plain.records_json(plain.SUBVOLUME_FIELDS, empty) == "[]"


def listing(n: int) -> list[list[Any]]:
    """ListSubvolumes' columns of n snapshots (a creation time per hour, quotas off)."""
    return [list(range(1000, 1000 + n)), [256] * n,
            [f"data/.snapshots/s{k:05d}" for k in range(n)],
            [f"0123abcd-0000-4111-8222-{k:012d}" for k in range(n)], ["p-uuid"] * n, [""] * n,
            list(range(5000, 5000 + n)), [1764325580000000 + k * 3600_000_000 for k in range(n)],
            [k and 1764325580123456 + k * 3600_000_000 for k in range(n)],  # 0: "-"
            [k % 3 != 0 for k in range(n)], [True] * n, *([[0] * n] * 4)]


@pytest.mark.parametrize("n", [0, 1, 2, 1000])
def test_the_lean_listing_is_the_full_paths(n: int) -> None:
    # lean.py draws ListSubvolumes' columns as they come; the full path made rows first
    columns = listing(n)
    rows = plain.subvolume_rows(columns)
    assert plain.records_json(plain.SUBVOLUME_FIELDS, columns) == json.dumps(
        rows, indent=2, sort_keys=True)
    cells = plain.subvolume_cells(rows)
    assert plain.subvolume_columns(columns) == [list(c) for c in zip(
        *cells, strict=True)] or (n == 0 and plain.subvolume_columns(columns) == [
            [] for _ in COLUMNS])
    for width, terminal in ((250, False), (120, True)):
        mine = plain.table_columns(COLUMNS, plain.subvolume_columns(columns), width, terminal)
        assert mine is not None
        assert mine == rich_table(COLUMNS, cells, width, terminal)


def test_a_listing_of_the_table_columns_draws_the_same_table() -> None:
    # lean.py asks ListSubvolumes for plain.TABLE_FIELDS only (`columns`): the others
    # come empty
    columns = listing(5)
    only = [c if name in plain.TABLE_FIELDS else []
            for name, c in zip(plain.SUBVOLUME_FIELDS, columns, strict=True)]
    assert plain.subvolume_columns(only) == plain.subvolume_columns(columns)
    for missing in plain.TABLE_FIELDS:  # a column the table shows cannot be left out
        with pytest.raises(ValueError):
            plain.subvolume_columns([[] if name == missing else c for name, c in zip(
                plain.SUBVOLUME_FIELDS, only, strict=True)])


def test_columns_that_make_no_rows_are_refused() -> None:
    columns = listing(2)
    with pytest.raises(ValueError):
        plain.subvolume_columns([*columns[:-1], [0]])
    with pytest.raises(ValueError):
        plain.subvolume_columns(columns[:-1])
    assert plain.table_columns(["A", "B"], [["1"], ["2", "3"]], 250, False) is None
    assert plain.table_columns(["A", "B"], [["1"]], 250, False) is None


class FakeStream(io.StringIO):
    def __init__(self, tty: bool, encoding: str = "utf-8") -> None:
        super().__init__()
        self._tty, self._encoding = tty, encoding

    def isatty(self) -> bool:
        return self._tty

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._encoding


@pytest.mark.parametrize(("tty", "env", "expected"), [
    (False, {}, (250, False)),
    (False, {"TERM": "dumb"}, (250, False)),
    (False, {"FORCE_COLOR": "1"}, None),
    (False, {"TTY_COMPATIBLE": "1"}, None),
    (True, {"TERM": "xterm"}, "terminal"),
    (True, {"TERM": "dumb"}, None),
    (True, {"COLUMNS": "100"}, None),
])
def test_console_mode_is_output_consoles(tty: bool, env: dict[str, str], expected: Any,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("FORCE_COLOR", "TTY_COMPATIBLE", "COLUMNS", "JUPYTER_COLUMNS", "TERM"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    stream = FakeStream(tty)
    mode = plain.console_mode(stream)
    if expected == "terminal":
        assert mode is not None and mode[1] is True
        # the width rich finds for a terminal (stdin, stdout, stderr asked in turn, or 80)
        console = Console(file=stream, force_terminal=True)
        assert mode[0] == console.width
    else:
        assert mode == expected
    if mode is not None and not tty:
        console = Console(file=stream, width=250)
        assert (console.width, console.color_system is not None) == mode


def test_console_mode_declines_other_encodings() -> None:
    assert plain.console_mode(FakeStream(False, "ascii")) is None


def test_real_stdout_mode_is_known() -> None:
    assert plain.console_mode(sys.stdout) is None or plain.console_mode(sys.stdout)
