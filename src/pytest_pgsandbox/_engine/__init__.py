"""The engine: everything below the pytest layer, in pipeline order (no pytest imports).

Shared vocabulary at the top: ``urls`` (connection info, masking), ``naming`` (database
names). Then the stages, each of which may import only those before it: ``clock``,
``servers``, ``templates``, ``isolation``, ``drivers``. The façade on top may import all of
them: ``sandbox`` (what one test session drives), ``handle`` (the ``pg`` object) and
``helpers`` (its table, CSV and SQL-file helpers). ``tests/unit/test_layout.py`` holds
these rules.
"""
