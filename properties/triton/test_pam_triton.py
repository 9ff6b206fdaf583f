"""The PAM kernel suite (properties/pam_suite.py) on the Triton kernels.

The same checks as torch's (properties/test_pam_kernels.py): element-wise ops
in every format and both modes, every input class and every TestFloat level-1
pair, and the matrix product in the sequential order, against the oracle bit
for bit.  On the CPU the kernels run in Triton's interpreter, which must be
chosen before triton is imported: :data:`properties.pam_suite.TRITON` sets
``TRITON_INTERPRET=1`` when CUDA is absent.  The counted cases run whole (about
17k pairs per format and op: a few interpreter programs each).  Without triton
the module is skipped with the reason.
"""

from __future__ import annotations

import pytest

pytest.importorskip("triton", reason="triton is not installed (pip install 'revcheck[triton]')")

from properties import pam_suite
from properties.pam_suite import PamKernels

# inf - inf in the interpreter's NumPy adds is expected (it must give the canonical NaN).
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


@pytest.fixture(scope="module")
def kernels(device: str) -> PamKernels:
    return pam_suite.loaded(pam_suite.TRITON)


class TestTritonElementwise(pam_suite.ElementwiseSuite):
    """Element-wise PAM ops vs the oracle: random draws of every class, counted TestFloat pairs."""


class TestTritonMatmul(pam_suite.MatmulSuite):
    """pam_matmul vs the oracle in the sequential order (the only order the Triton kernel has)."""
