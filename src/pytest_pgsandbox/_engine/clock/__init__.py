"""Frozen time, in Python and in the database together.

``dbclock`` is the database's side: the ``pgsandbox_clock`` schema every template carries
and the rewriting of SQL time keywords; ``freezing`` moves Python's clock (freezegun or
time-machine) and the database's as one.

May import: the shared vocabulary and the package's ``errors`` only: servers and templates
install the clock, so it stands below them.
"""
