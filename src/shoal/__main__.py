"""``python -m shoal`` runs the CLI."""

from shoal.cli.main import main

raise SystemExit(main())
