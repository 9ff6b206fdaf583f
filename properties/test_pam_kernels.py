"""The PAM kernel suite (properties/pam_suite.py) on torch and every other registered implementation.

Element-wise ops and the matrix product against the NumPy oracle, bit for bit
(docs/spec.md §2), on the ``device`` fixture's device.  The implementations are
those of the audit's op registry (``revcheck.audit.ops_pam.IMPLEMENTATIONS``)
except the ones whose suite runs from a directory named after their optional
dependency (Triton: properties/triton/); one that cannot be imported here is
skipped with the reason.
"""

from __future__ import annotations

import pytest

from properties import pam_suite
from properties.pam_suite import PamKernels

KERNELS = [
    kernels for kernels in pam_suite.registered_kernels() if kernels.name not in pam_suite.OWN_DIRECTORY
]


@pytest.fixture(scope="module", params=KERNELS, ids=[kernels.name for kernels in KERNELS])
def kernels(request: pytest.FixtureRequest) -> PamKernels:
    return pam_suite.loaded(request.param)


class TestElementwise(pam_suite.ElementwiseSuite):
    """Element-wise PAM ops vs the oracle: random draws of every class, counted TestFloat pairs."""


class TestMatmul(pam_suite.MatmulSuite):
    """pam_matmul vs the oracle: the sequential order bit for bit, the others within the bound."""
