"""python -m dropout_stats: the dropout-stats command line (audit, verify, explain)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
