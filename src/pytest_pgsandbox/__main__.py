from pytest_pgsandbox.cli.main import main

raise SystemExit(main())
