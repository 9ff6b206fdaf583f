"""Benchmarks: ``python -m revcheck.bench`` (``nox -s bench``).

Each family module (``pam``, ``bdia``) exposes ``run(args) -> list[Row]``;
ratios are always between timings taken in the same run.
"""
