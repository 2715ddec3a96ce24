"""`python -m convstudy` entry point."""

from convstudy.cli import main

raise SystemExit(main())
