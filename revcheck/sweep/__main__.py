"""``python -m revcheck.sweep``: the same command line as ``revcheck sweep``."""

from revcheck.sweep.cli import main

if __name__ == "__main__":  # not when imported, e.g. by pytest --doctest-modules
    raise SystemExit(main())
