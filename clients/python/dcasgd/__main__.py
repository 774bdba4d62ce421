"""`python3 -m dcasgd status|checkpoint|watch --ps ADDR[,ADDR...]` (see dcasgd.cli)."""

import sys

from dcasgd.cli import main

if __name__ == "__main__":
    sys.exit(main())
