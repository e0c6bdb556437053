from lottery.cli.main import entry

raise SystemExit(entry())
