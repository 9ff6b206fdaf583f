"""``python -m revcheck``: the same command line as the ``revcheck`` console script."""

import sys

from revcheck.cli import main

sys.exit(main())
