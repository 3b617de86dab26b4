"""`python -m cloaca`: the cloaca command line, the same as the `cloaca` script."""

import sys

from cloaca.cli import main

if __name__ == "__main__":
    sys.exit(main())
