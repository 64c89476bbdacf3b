"""How a test is kept apart: the fourth stage (server → template → **isolation** → handle).

``transaction`` (the default: one outer transaction rolled back, commits as savepoints),
``reset`` (one database per worker, only the tables a test wrote put back), ``clone`` (a
database per test from a pool of ready copies) with ``recycle`` (a copy only rows were
written to put back and handed on), ``inplace`` (the URL's own database, for a
role that may not create databases) and ``verify`` (the catalog digest that checks a test
left nothing behind).

May import: the shared vocabulary, ``servers``, ``templates``, the package's ``errors``.
Never drivers or the façade.
"""
