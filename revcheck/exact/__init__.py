"""An independent exact model (Fractions/mpmath), slow on purpose, used to test the oracle."""
