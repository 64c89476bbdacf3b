from pytest_pgsandbox.cli import main

raise SystemExit(main())
