"""``python -m revcheck``: the same command line as the ``revcheck`` console script."""

import sys

from revcheck.cli import main

if __name__ == "__main__":  # not when imported, e.g. by pytest --doctest-modules
    sys.exit(main())
