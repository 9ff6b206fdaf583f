"""The one base class of revcheck's usage errors.

A usage error is a request revcheck cannot carry out (an unknown op, format,
device or mode, an unimportable target, a bad state directory): nothing was
checked, so it is never reported as a verdict.  The command-line tools catch
:class:`UsageError` and exit with status 2 and one line on stderr; from Python
it is a ``ValueError``, so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(ValueError):
    """A request that cannot be carried out; the message says what to use instead."""
