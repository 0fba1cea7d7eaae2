"""btrfsd-notify: a per-user agent that turns btrfsd's signals into desktop notifications.

A D-Bus client only (like btrfsctl it imports no bus/core/fs module): it listens on the
system bus for QuotaWarning and Job.Completed, asks btrfsd *as the user* whether the
subject is theirs (mine.py), and shows a notification through
org.freedesktop.Notifications on the session bus (desktop.py), rate-limited and without
repeats (throttle.py). docs/front-ends.md describes it.

    throttle.py   which alerts to show: no repeats, a rate limit (pure, fake-clock tested)
    messages.py   what a notification says (pure)
    mine.py       whose alert it is: polkit read-all, GetQuotaUsage as the caller, ownership
    sysbus.py     the system-bus side: signals in, calls to btrfsd with back-off on Busy
    desktop.py    the session-bus side: Notify, ActionInvoked
    actions.py    the "open detail" command, configurable
    agent.py      wiring, command line, main()
"""
