"""`python -m nbkit ...`: see nbkit/cli.py."""
from nbkit.cli import main

raise SystemExit(main())
