"""``python -m dbpool``: the same as the ``dbpool`` command."""

from dbpool.cli import main

raise SystemExit(main())
