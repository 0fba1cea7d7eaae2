from btrfsd.core.filesystems import Filesystem
from btrfsd.fs.mounts import MountEntry, parse_mountinfo

SAMPLE = (
    "22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
    "43 22 0:39 / /mnt/data rw,relatime shared:30 - btrfs /dev/loop0 "
    "rw,space_cache=v2,subvolid=5,subvol=/\n"
    "44 22 0:39 /home /home rw,relatime - btrfs /dev/loop0 rw,subvolid=256,subvol=/home\n"
    "45 22 0:40 / /mnt/with\\040space rw - btrfs /dev/loop1 rw,subvolid=5,subvol=/\n"
    "garbage line\n"
)


def test_only_btrfs_entries_with_fields() -> None:
    entries = parse_mountinfo(SAMPLE)
    assert [e.mount_point for e in entries] == ["/mnt/data", "/home", "/mnt/with space"]
    home = entries[1]
    assert home.root == "/home"
    assert home.subvolume_id == 256
    assert home.device_number == "0:39"
    assert home.source == "/dev/loop0"


def test_missing_subvolid_is_none() -> None:
    (e,) = parse_mountinfo("50 22 0:41 / /x rw - btrfs /dev/sdb rw,ssd\n")
    assert e.subvolume_id is None


def test_a_listing_path_is_found_through_the_mount_that_shows_it() -> None:
    top = MountEntry(1, "0:1", "/", "/srv/pool", "/dev/x", {})
    home = MountEntry(2, "0:1", "/@home", "/home", "/dev/x", {})
    fs = Filesystem(uuid="u", mounts=[top, home])
    assert fs.path_of("") == fs.path_of("/") == "/srv/pool"  # the top level itself
    assert fs.path_of("data/snap") == "/srv/pool/data/snap"
    assert fs.path_of("@home/alice") == "/home/alice"  # the closest root wins
    assert fs.path_of("@home") == "/home"
    assert Filesystem(uuid="u", mounts=[home]).path_of("data") is None
