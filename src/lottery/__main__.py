from lottery.cli.main import main

raise SystemExit(main())
