"""btrfsd: a Btrfs management service on the system D-Bus."""
