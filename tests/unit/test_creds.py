"""Walking a path with a caller's identity: the kernel judges, per thread, and what the
caller may not search is simply missing for them (issue 17). Needs root, as CI has."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from btrfsd.errors import NotFound
from btrfsd.fs.creds import Creds, acting_as
from btrfsd.fs.paths import reachable, resolve

NOBODY = Creds(uid=65534, gid=65534)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")


@pytest.fixture
def tree() -> Iterator[Path]:
    # not under pytest's tmp_path: its parents are 0700, nobody could walk anything
    top = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="btrfsd-creds-"))
    os.chmod(top, 0o755)
    (top / "public" / "sub").mkdir(parents=True)
    (top / "secret" / "inside").mkdir(parents=True)
    os.chmod(top / "public", 0o755)
    os.chmod(top / "secret", 0o700)
    yield top
    shutil.rmtree(top)


def test_a_caller_finds_what_they_may_search(tree: Path) -> None:
    with resolve(str(tree / "public" / "sub"), as_caller=NOBODY) as res:
        assert res.exists and res.open() >= 0


def test_what_a_caller_may_not_search_does_not_exist_for_them(tree: Path) -> None:
    with pytest.raises(NotFound) as hidden:
        resolve(str(tree / "secret" / "inside"), as_caller=NOBODY)
    with pytest.raises(NotFound) as missing:
        resolve(str(tree / "public" / "nothing"), as_caller=NOBODY)
    # the same words as a missing name: no existence test
    assert str(hidden.value) == f"{tree}/secret/inside does not exist."
    assert str(missing.value) == f"{tree}/public/nothing does not exist."
    with resolve(str(tree / "secret" / "inside")) as res:  # root still sees it
        assert res.exists


def test_groups_count(tree: Path) -> None:
    os.chown(tree / "secret", 0, 4242)
    os.chmod(tree / "secret", 0o750)
    with resolve(str(tree / "secret" / "inside"),
                 as_caller=Creds(uid=65534, gid=65534, groups=(4242,))) as res:
        assert res.exists


def test_the_identity_is_this_threads_only_and_given_back(tree: Path) -> None:
    inside = tree / "secret" / "inside"
    entered, release = threading.Event(), threading.Event()
    seen: list[bool] = []

    def other() -> None:
        with acting_as(NOBODY):
            seen.append(os.path.exists(inside))  # stat uses the fsuid: nobody now
            entered.set()
            release.wait(5)

    t = threading.Thread(target=other)
    t.start()
    assert entered.wait(5)
    try:
        assert os.path.exists(inside)  # this thread is still root meanwhile
    finally:
        release.set()
        t.join(5)
    assert seen == [False]
    groups = os.getgroups()
    with acting_as(NOBODY):
        assert not os.path.exists(inside)
    assert os.path.exists(inside) and os.getgroups() == groups


def test_reachable_judges_each_directory_once_and_by_search_permission(tree: Path) -> None:
    (tree / "readable").mkdir()
    os.chmod(tree / "readable", 0o744)  # listable, not searchable: names cannot be found
    (tree / "searchable").mkdir()
    os.chmod(tree / "searchable", 0o711)  # not listable, searchable: names can be found
    for d in ("readable", "searchable"):
        (tree / d / "x").mkdir()
    paths = [str(tree / "readable" / "x"), str(tree / "searchable" / "x"),
             str(tree / "secret" / "inside"), str(tree / "public" / "sub")]
    for names_exist in (False, True):
        assert reachable(paths, NOBODY, names_exist=names_exist) == [False, True, False, True]
    assert reachable([str(tree / "public" / "nothing")], NOBODY) == [False]
