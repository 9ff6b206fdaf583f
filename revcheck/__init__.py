"""revcheck: prove or refute bit-exactness claims of efficient-training arithmetic."""

from revcheck import formats
from revcheck.testing import BitMismatchError, assert_bit_exact

__all__ = ["BitMismatchError", "assert_bit_exact", "formats"]
__version__ = "0.1.0"
