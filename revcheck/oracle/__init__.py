"""The oracle: pure-NumPy reference arithmetic on bit patterns and integer codes.

Nothing under ``revcheck.oracle`` imports torch; a test enforces it.
"""
