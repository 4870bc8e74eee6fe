"""`python -m seqcap ...` is `seqcap ...`."""

import sys

from seqcap.cli import main

if __name__ == "__main__":
    sys.exit(main())
