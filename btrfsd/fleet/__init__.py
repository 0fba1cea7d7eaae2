"""btrfsd-fleet: btrfsd's API over NATS for many hosts (docs/fleet.md).

A D-Bus client of the local btrfsd like btrfsctl: it never imports the daemon's core or
fs layers (tests/unit/test_layers.py).
"""
