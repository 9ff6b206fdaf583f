"""A PAM multiply kernel of the kind a user writes: integer arithmetic on bf16/fp16/fp32 bit views.

It implements the fast path everyone starts with, I(|a|) + I(|b|) - I(1.0), plus
the special values (NaN, inf, zero).  Audit it with::

    revcheck audit examples/audit_my_kernel.py:pam_mul --op pam_mul --format bf16
"""

import torch

_INT_VIEW = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}
_MANTISSA_BITS = {torch.bfloat16: 7, torch.float16: 10, torch.float32: 23}


def pam_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PAM product a ⊡ b for bf16, fp16 and fp32 tensors."""
    info = torch.finfo(a.dtype)
    mantissa_bits = _MANTISSA_BITS[a.dtype]
    exponent_bits = info.bits - 1 - mantissa_bits
    bias = (1 << (exponent_bits - 1)) - 1
    one = bias << mantissa_bits
    magnitude_mask = (1 << (info.bits - 1)) - 1
    inf = ((1 << exponent_bits) - 1) << mantissa_bits

    raw_a = a.view(_INT_VIEW[a.dtype]).to(torch.int64)
    raw_b = b.view(_INT_VIEW[b.dtype]).to(torch.int64)
    mag_a, mag_b = raw_a & magnitude_mask, raw_b & magnitude_mask
    negative = (raw_a < 0) ^ (raw_b < 0)

    magnitude = (mag_a + mag_b - one).clamp(0, inf)  # the integer identity, overflow to inf
    magnitude = torch.where((mag_a == 0) | (mag_b == 0), 0, magnitude)
    magnitude = torch.where((mag_a == inf) | (mag_b == inf), inf, magnitude)
    result = torch.where(negative, magnitude | (1 << (info.bits - 1)), magnitude)
    result = result.to(_INT_VIEW[a.dtype]).view(a.dtype)
    nan = torch.isnan(a) | torch.isnan(b) | ((mag_a == inf) & (mag_b == 0)) | ((mag_a == 0) & (mag_b == inf))
    return torch.where(nan, torch.full_like(a, float("nan")), result)
