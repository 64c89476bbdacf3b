"""Where PostgreSQL comes from: the second stage (settings → **server** → template → isolation).

Finding binaries (``discovery``), starting a private local server (``cluster``, fed by the
initdb and template caches in ``cache``, started with ``options``), recording and reaping
what we started (``janitor``, ``places``), using an existing server (``external``) or a
container (``docker``), and choosing among them (``choice``). ``provision`` creates and
drops the databases we label; ``roles`` holds the cluster-wide roles we create. ``base`` is
the interface every server offers.

May import: the shared vocabulary (``urls``, ``naming``), ``clock`` (a cached cluster carries
the database clock), the package's ``errors`` and ``settings``. Never templates, isolation,
drivers or the façade.
"""
