"""`python -m nbkit ...`: see nbkit/interfaces/cli.py."""
from nbkit.interfaces.cli import main

raise SystemExit(main())
