"""An independent exact model (Fractions/mpmath), slow on purpose, used to test the oracle.

Independent in its arithmetic, not in its policies: see :mod:`revcheck.exact.pam`.
"""
