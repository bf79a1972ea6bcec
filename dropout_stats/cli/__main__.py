"""python -m dropout_stats.cli: the dropout-stats command line, as python -m dropout_stats."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
