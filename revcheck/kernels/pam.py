"""Piecewise-affine arithmetic (docs/spec.md §2) on torch tensors, by integer arithmetic on bit views.

Every operation takes tensors of one supported float dtype (float64, float32,
float16, bfloat16, float8_e5m2, float8_e4m3fn, float8_e5m2fnuz, float8_e4m3fnuz)
on any device -- or, for the formats torch has no dtype of (fp6_e3m2fn,
fp6_e2m3fn, fp4_e2m1fn), ``uint8`` tensors of their bit patterns together with
``fmt=`` (docs/spec.md D1.10), returning ``uint8`` patterns -- and computes the
exact piecewise-affine value from the bit fields of its inputs, rounded once,
round-to-nearest-even, to the output format.  No floating-point multiply is
involved: values are decoded into (sign, exponent E, m-bit fraction F) as int64
tensors, combined with integer additions, and encoded back with an integer
rounding step.  The one float operation is the accumulator addition of
:func:`pam_matmul`, which docs/spec.md §2 defines as a float addition (``fl(acc + p)``).

Modes (names and validation: :mod:`revcheck.modes`).  ``"ieee"``: gradual
underflow, overflow to ±inf (±max-finite for formats without infinity).
``"ftz"``: subnormal inputs are signed zeros, and a result whose exact value
is below the smallest normal becomes a signed zero.
A computed NaN is the format's canonical quiet NaN.  Formats without infinity
(fp8_e4m3fn) return ±max-finite wherever the value would be ±inf (overflow,
``x ⊘ ±0``, ``pa_log2(0)``).

The reference is the NumPy oracle :mod:`revcheck.oracle.pam`; the property
suites in ``properties/test_pam_*.py`` check these kernels against it bit for bit.

Autograd (docs/spec.md D2.11 to D2.13).  ``pam_mul``, ``pam_div``, ``pa_log2`` and
``pa_exp2`` are differentiable; ``backward=`` chooses the derivative, as for
:class:`revcheck.nn.pam.PAMMatmul`:

``"approx"`` (the default)
    The derivative ``D`` of the real function the operation stands for (the
    product rule ``d(a·b)/da = b``; ``1/b`` and ``−(a/b)/b``; ``1/(x ln 2)``;
    ``2^y ln 2``), with every multiplication and division in ``D`` replaced by
    ``⊡`` and ``⊘`` and evaluated at the forward's inputs and output; the
    gradient is ``g ⊡ D``.
``"exact"``
    The slope of the piecewise-affine function actually computed, a signed power
    of two ``s`` (``sign(b)·2^(Eb + [Ma + Mb ≥ 1])`` for ``⊡``; ``2^−E`` for
    ``pa_log2``; ``2^⌊y⌋`` for ``pa_exp2``; see D2.12 for ``⊘``); the gradient is
    ``g ⊡ s`` with ``s`` held exactly (never rounded to the format first), i.e.
    ``g · s`` rounded once: an exponent addition, no multiplication.

Both backwards use PA operations (and sign flips) only, in the forward's mode;
gradients of broadcast operands are summed over the broadcast dimensions in the
accumulator dtype (torch's ``sum``, whose order is not declared) and rounded once
to the operand's dtype.  A backward run with ``create_graph=True`` is itself
differentiable the same way.  ``pam_mul_grad`` is piecewise constant and has no
autograd: it raises :class:`~revcheck.errors.UsageError` for inputs that require
grad (detach them).  ``pam_matmul`` with such inputs is
:class:`revcheck.nn.pam.PAMMatmul` (``B`` a matrix, ``order="sequential"``) and
raises otherwise.

Host floating-point environment (docs/spec.md D2.14).  In mode ``"ieee"`` no result
depends on the host's flush-to-zero / denormals-are-zero flags
(``torch.set_flush_denormal``): every operation is integer arithmetic, and
``pam_matmul`` adds with float additions only where it has proved that no operand
or result of any addition can be subnormal; elsewhere it adds with integer
arithmetic (:func:`_add_exact`), as the oracle does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from revcheck import formats
from revcheck.errors import UsageError
from revcheck.formats import FloatFormat
from revcheck.modes import check_mode

__all__ = [
    "BACKWARDS",
    "ORDERS",
    "accumulator_dtype",
    "check_backward",
    "pa_exp2",
    "pa_log2",
    "pam_div",
    "pam_matmul",
    "pam_mul",
    "pam_mul_grad",
    "round_to_dtype",
]

ORDERS = ("sequential", "pairwise")
BACKWARDS = ("approx", "exact")

# Significands handed to the rounding step stay below 2**_SIG_LIMIT_BITS so that shifts cannot overflow int64.
_SIG_LIMIT_BITS = 61


# ---- validation ------------------------------------------------------------------------------------------


def _supported_dtypes_text() -> str:
    dtypes = [f"torch.{f.torch_dtype_name}" for f in formats.FORMATS.values() if f.torch_dtype_name]
    patterns = [f.name for f in formats.FORMATS.values() if f.torch_dtype_name is None]
    return f"{', '.join(dtypes)}, or torch.uint8 bit patterns with fmt= one of {', '.join(patterns)}"


def _format_of_tensor(x: object, role: str, fmt: object = None) -> FloatFormat:
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{role} must be a torch.Tensor of a supported float dtype, got {type(x).__name__}; "
            f"supported dtypes are {_supported_dtypes_text()}"
        )
    if fmt is not None or x.dtype == torch.uint8:
        return _pattern_format(x, role, fmt)
    try:
        return formats.get(x.dtype)
    except formats.UnsupportedFormatError:
        kind = "an integer/bool" if not (x.is_floating_point() or x.is_complex()) else "an unsupported"
        raise TypeError(
            f"{role} has {kind} dtype {x.dtype}; PAM kernels accept {_supported_dtypes_text()} "
            "(convert explicitly, e.g. x.to(torch.float32); nothing is upcast silently)"
        ) from None


def _pattern_format(x: torch.Tensor, role: str, fmt: object) -> FloatFormat:
    """The format of ``x`` given ``fmt=``: ``x``'s own float format, or the format of its uint8 patterns."""
    if fmt is None:
        raise TypeError(
            f"{role} is a torch.uint8 tensor; pass fmt=... to say which format its bit patterns encode "
            f"(one of {', '.join(f.name for f in formats.FORMATS.values() if f.torch_dtype_name is None)})"
        )
    fmt_ = formats.get(fmt)
    if x.dtype != torch.uint8 or fmt_.torch_dtype_name is not None:
        if fmt_.torch_dtype_name is not None and x.dtype == getattr(torch, fmt_.torch_dtype_name):
            return fmt_
        wanted = f"torch.{fmt_.torch_dtype_name}" if fmt_.torch_dtype_name else "torch.uint8 (bit patterns)"
        raise TypeError(f"{role} has dtype {x.dtype} but fmt={fmt_.name} takes {wanted} tensors")
    if x.numel() and bool((x >> fmt_.width).any()):
        raise ValueError(
            f"{role} holds {fmt_.name} patterns with a bit above bit {fmt_.width - 1} set; {fmt_.width}-bit "
            "patterns sit in the low bits of a uint8 with the rest zero (docs/spec.md D1.9)"
        )
    return fmt_


def _binary_operands(
    a: object, b: object, op: str, fmt: object = None
) -> tuple[torch.Tensor, torch.Tensor, FloatFormat]:
    fmt_a = _format_of_tensor(a, f"{op}: first operand", fmt)
    fmt_b = _format_of_tensor(b, f"{op}: second operand", fmt)
    assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
    if fmt_a is not fmt_b:
        raise TypeError(
            f"{op}: operands have different dtypes {a.dtype} and {b.dtype}; both must have the same "
            "dtype (convert one explicitly; nothing is upcast silently)"
        )
    if a.device != b.device:
        raise ValueError(f"{op}: operands are on different devices {a.device} and {b.device}; move one")
    try:
        torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError:
        raise ValueError(
            f"{op}: shapes {tuple(a.shape)} and {tuple(b.shape)} do not broadcast; use equal shapes "
            "or shapes that broadcast like torch.mul's operands"
        ) from None
    return a, b, fmt_a


def check_backward(backward: object) -> str:
    """``backward`` if it is one of :data:`BACKWARDS`, else ``ValueError`` naming them."""
    if backward not in BACKWARDS:
        raise ValueError(
            f"unknown backward {backward!r}; accepted values are {', '.join(map(repr, BACKWARDS))}"
        )
    return str(backward)


def round_to_dtype(x: Tensor, dtype: torch.dtype) -> Tensor:
    """``x`` rounded once (RNE, torch's cast) to ``dtype``, saturating where the format has no infinity.

    torch's cast gives NaN on overflow in the fnuz formats; revcheck's results saturate to
    ±max finite there (docs/spec.md D1.1, D2.17), so the cast is clamped first (the values between
    max finite and the overflow threshold round to max finite either way; NaN stays NaN).
    Differentiable like the cast (zero gradient where it saturates).

    >>> import torch
    >>> round_to_dtype(torch.tensor([1e6, -250.0, 1.0]), torch.float8_e4m3fnuz).view(torch.uint8).tolist()
    [127, 255, 64]
    """
    if x.dtype == dtype:
        return x
    fmt = formats.get(dtype)
    if not fmt.has_inf:
        limit = float(_max_finite_value(fmt))
        x = x.clamp(-limit, limit)
    return x.to(dtype)


def _max_finite_value(fmt: FloatFormat) -> float:
    exponent = (fmt.max_finite >> fmt.mantissa_bits) - fmt.bias
    significand = (fmt.max_finite & fmt.mantissa_mask) | (1 << fmt.mantissa_bits)
    return math.ldexp(significand, exponent - fmt.mantissa_bits)


def accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype :func:`pam_matmul` accumulates and returns in (:func:`revcheck.formats.accumulator_format`).

    float64 for float64, float32 for every narrower dtype.
    """
    return _float_dtype(formats.accumulator_format(dtype))


# ---- bit views -------------------------------------------------------------------------------------------


def _int_view_dtype(fmt: FloatFormat) -> torch.dtype:
    return getattr(torch, fmt.int_dtype.name)


def _float_dtype(fmt: FloatFormat) -> torch.dtype:
    """The dtype of ``fmt``'s tensors: its float dtype, or uint8 (bit patterns) where torch has none."""
    return getattr(torch, fmt.torch_dtype_name or fmt.uint_dtype.name)


def _bits64(x: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """The bit pattern of every element as int64 (sign-extended for narrow formats)."""
    return x.contiguous().view(_int_view_dtype(fmt)).to(torch.int64)


def _from_parts(negative: torch.Tensor, magnitude: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """Tensor of ``fmt`` with the given sign (bool) and magnitude bits (int64 in [0, 2**(w-1)))."""
    # The sign bit as a negative number keeps every intermediate inside the signed container's range;
    # a pattern narrower than its container has its sign bit below the container's (positive there).
    sign_value = fmt.sign_mask if fmt.padding_bits else -(1 << (fmt.width - 1))
    signed = torch.where(negative, magnitude + sign_value, magnitude)
    return signed.to(_int_view_dtype(fmt)).view(_float_dtype(fmt))


# ---- decoding --------------------------------------------------------------------------------------------


@dataclass
class _Decoded:
    """Fields of every element: |x| = 2**exponent * (1 + fraction / 2**m) for finite nonzero x."""

    negative: torch.Tensor  # bool
    exponent: torch.Tensor  # int64, unbiased, exact also for subnormals
    fraction: torch.Tensor  # int64, m bits
    is_nan: torch.Tensor
    is_inf: torch.Tensor
    is_zero: torch.Tensor  # includes subnormals in mode "ftz"
    mantissa_bits: int

    @property
    def is_finite_nonzero(self) -> torch.Tensor:
        return ~(self.is_nan | self.is_inf | self.is_zero)

    def widened(self, fmt: FloatFormat) -> _Decoded:
        """The same values described with ``fmt``'s (wider) fraction width; exact."""
        extra = fmt.mantissa_bits - self.mantissa_bits
        return _Decoded(
            self.negative,
            self.exponent,
            self.fraction << extra,
            self.is_nan,
            self.is_inf,
            self.is_zero,
            fmt.mantissa_bits,
        )

    def select(self, index: Callable[[torch.Tensor], torch.Tensor]) -> _Decoded:
        return _Decoded(
            index(self.negative),
            index(self.exponent),
            index(self.fraction),
            index(self.is_nan),
            index(self.is_inf),
            index(self.is_zero),
            self.mantissa_bits,
        )


def _floor_log2(value: torch.Tensor) -> torch.Tensor:
    """floor(log2(v)) of positive int64 values by binary search on shifts (0 for v <= 0)."""
    result = torch.zeros_like(value)
    rest = value.clamp(min=1)
    for step in (32, 16, 8, 4, 2, 1):
        has_high = (rest >> step) != 0
        rest = torch.where(has_high, rest >> step, rest)
        result = result + torch.where(has_high, step, 0)
    return result


def _decode(x: torch.Tensor, fmt: FloatFormat, mode: str) -> _Decoded:
    bits = _bits64(x, fmt)
    negative = bits < 0 if fmt.width == 64 else ((bits >> (fmt.width - 1)) & 1).bool()
    magnitude = bits & fmt.magnitude_mask
    biased = magnitude >> fmt.mantissa_bits
    stored_fraction = magnitude & fmt.mantissa_mask
    if fmt.nan_encoding == "ieee":
        is_nan = magnitude > fmt.exponent_mask
        is_inf = magnitude == fmt.exponent_mask
    else:
        if fmt.nan_encoding == "fn":
            is_nan = magnitude == fmt.magnitude_mask
        elif fmt.nan_encoding == "fnuz":  # the pattern of -0 is the one NaN (docs/spec.md D1.7)
            is_nan = negative & (magnitude == 0)
        else:  # "none": every pattern is a number
            is_nan = torch.zeros_like(negative)
        is_inf = torch.zeros_like(is_nan)
    is_subnormal = (biased == 0) & (magnitude != 0)
    is_zero = (magnitude == 0) & ~is_nan
    if mode == "ftz":
        is_zero = is_zero | is_subnormal
    exponent = biased - fmt.bias
    fraction = stored_fraction
    if mode == "ieee" and bool(is_subnormal.any()):
        # A subnormal is mantissa * 2**(emin - m); normalising its leading one gives its true E and M.
        shift = fmt.mantissa_bits - _floor_log2(stored_fraction)
        exponent = torch.where(is_subnormal, fmt.emin - shift, exponent)
        fraction = torch.where(is_subnormal, (stored_fraction << shift) & fmt.mantissa_mask, fraction)
    return _Decoded(negative, exponent, fraction, is_nan, is_inf, is_zero, fmt.mantissa_bits)


# ---- rounding --------------------------------------------------------------------------------------------


def _round_magnitude(
    significand: torch.Tensor,
    exp2: torch.Tensor,
    sticky: torch.Tensor | None,
    fmt: FloatFormat,
    mode: str,
    leading: int | None = None,
) -> torch.Tensor:
    """Magnitude bits of (significand + sticky·δ) · 2**exp2 rounded once to ``fmt`` (RNE).

    ``significand`` is a non-negative int64 below 2**61; ``sticky`` marks values
    strictly above ``significand`` (by less than one unit), and callers only set
    it when the significand has more than m + 2 bits.  Overflow gives the
    format's overflow magnitude (inf or max finite); in mode ``"ftz"`` an exact
    value below the smallest normal gives 0.  ``leading``: floor(log2(significand))
    when the caller knows it for every nonzero element (saves the bit search).
    """
    m = fmt.mantissa_bits
    leading_bit = _floor_log2(significand) if leading is None else torch.full_like(significand, leading)
    # Bits to drop: down to p bits for normal results, down to the subnormal quantum below emin.
    drop = torch.maximum(leading_bit - m, (fmt.emin - m) - exp2)
    drop_right = drop.clamp(min=0, max=63)
    kept = significand >> drop_right
    remainder = significand - (kept << drop_right)
    half = torch.where(drop_right > 0, 1 << (drop_right - 1).clamp(min=0), 0)
    odd = (kept & 1) == 1
    above_half = remainder > half
    at_half = remainder == half
    if sticky is not None:
        above_half = above_half | (at_half & sticky)
    round_up = (drop_right > 0) & (above_half | (at_half & odd))
    kept = torch.where(drop > 0, kept + round_up.to(torch.int64), significand << (-drop).clamp(min=0))
    # Clamped to the all-ones exponent so that (offset << m) + kept cannot leave int64 (fp64: 2047 << 52).
    offset = (exp2 + drop - (fmt.emin - m)).clamp(min=0, max=fmt.max_biased_exponent) << m
    overflow = kept > fmt.max_finite - offset
    magnitude = torch.where(overflow, fmt.overflow_magnitude, offset + torch.where(overflow, 0, kept))
    is_zero = significand == 0
    if sticky is not None:
        is_zero = is_zero & ~sticky
    if mode == "ftz":
        is_zero = is_zero | (leading_bit + exp2 < fmt.emin)
    return torch.where(is_zero, 0, magnitude)


def _limit_significand(
    significand: torch.Tensor, exp2: torch.Tensor, sticky: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shift significands of up to 63 bits below 2**61, folding the dropped bits into ``sticky``."""
    drop = (_floor_log2(significand) - (_SIG_LIMIT_BITS - 1)).clamp(min=0)
    shifted = significand >> drop
    sticky = sticky | ((shifted << drop) != significand)
    return shifted, exp2 + drop, sticky


def _assemble(
    negative: torch.Tensor,
    magnitude: torch.Tensor,
    fmt: FloatFormat,
    *,
    nan: torch.Tensor | None = None,
    inf: torch.Tensor | None = None,
    zero: torch.Tensor | None = None,
) -> torch.Tensor:
    """Final tensor: special results override the computed magnitude; NaN is canonical (positive)."""
    if zero is not None:
        magnitude = torch.where(zero, 0, magnitude)
    if inf is not None:
        magnitude = torch.where(inf, fmt.overflow_magnitude, magnitude)
    if nan is not None and not fmt.has_nan:  # docs/spec.md D2.16: the zero with the result's sign
        magnitude = torch.where(nan, 0, magnitude)
    if not fmt.has_negative_zero:  # docs/spec.md D2.15: a zero result is +0
        negative = negative & (magnitude != 0)
    if nan is not None and fmt.has_nan:
        # The canonical NaN split into sign and magnitude (fnuz: the sign bit alone).
        magnitude = torch.where(nan, fmt.canonical_nan & fmt.magnitude_mask, magnitude)
        negative = torch.where(nan, bool(fmt.canonical_nan & fmt.sign_mask), negative)
    return _from_parts(negative, magnitude, fmt)


# ---- element-wise operations ------------------------------------------------------------------------------


def _mul_fields(
    a: _Decoded, b: _Decoded, fmt: FloatFormat, mode: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """negative, magnitude, nan, inf, zero masks of a ⊡ b for decoded operands (broadcasting)."""
    m = fmt.mantissa_bits
    negative = a.negative ^ b.negative
    fraction_sum = a.fraction + b.fraction
    carry = fraction_sum >> m  # [Ma + Mb >= 1]
    # Ma + Mb < 1: 2**(Ea+Eb) (1 + Ma + Mb); else 2**(Ea+Eb+1) (Ma + Mb): either way p = m + 1 bits, exact.
    significand = torch.where(carry == 1, fraction_sum, fraction_sum + (1 << m))
    exp2 = a.exponent + b.exponent + carry - m
    magnitude = _round_magnitude(significand, exp2, None, fmt, mode, leading=m)
    nan = a.is_nan | b.is_nan | (a.is_inf & b.is_zero) | (a.is_zero & b.is_inf)
    inf = a.is_inf | b.is_inf
    zero = a.is_zero | b.is_zero
    return negative, magnitude, nan, inf, zero


def _pam_mul_general(a: torch.Tensor, b: torch.Tensor, fmt: FloatFormat, mode: str) -> torch.Tensor:
    negative, magnitude, nan, inf, zero = _mul_fields(_decode(a, fmt, mode), _decode(b, fmt, mode), fmt, mode)
    return _assemble(negative, magnitude, fmt, nan=nan, inf=inf, zero=zero)


# Elements per block of the CPU fast path: two operand blocks, the result's and a scratch block (fp32: 1 MiB)
# stay in a core's L2 cache, and a block is long enough that the per-op cost of eager torch stays small.
_FAST_BLOCK = 1 << 16


def _pam_mul_regular(a: torch.Tensor, b: torch.Tensor, fmt: FloatFormat) -> torch.Tensor | None:
    """I(|a|) + I(|b|) − I(1.0) in the format's own integer width, or None if some element is irregular.

    Proof first, from the extremes of the magnitude bits (one masking pass and
    one ``aminmax`` per operand): if every input is normal and every possible
    ``I(|a|) + I(|b|) − I(1.0)`` is a normal code, the plain wrapping sum
    ``a + b − I(1.0)`` of the full patterns is the PAM product of docs/spec.md §2, sign bit
    included (the signs add mod 2, and the magnitude part cannot carry into the
    sign bit).  Operands with zeros (ReLU outputs...) take :func:`_pam_mul_with_zeros`.
    """
    return _affine_regular(a, b, fmt, divide=False)


def _pam_div_regular(a: torch.Tensor, b: torch.Tensor, fmt: FloatFormat) -> torch.Tensor | None:
    """I(|a|) − I(|b|) + I(1.0), or None if some element is irregular: :func:`_pam_mul_regular` for ⊘.

    The same proof with ``t = I(|a|) − I(|b|) + I(1.0)``: if it is a normal code for all magnitudes
    in the operands' ranges, the wrapping difference ``a − b + I(1.0)`` of the full patterns is the
    PAM quotient (the sign bits subtract mod 2, i.e. XOR, and ``t`` cannot borrow from the sign bit).
    """
    return _affine_regular(a, b, fmt, divide=True)


def _affine_regular(a: torch.Tensor, b: torch.Tensor, fmt: FloatFormat, divide: bool) -> torch.Tensor | None:
    """The integer identity of ⊡ (``divide=False``) or ⊘ where the range proof covers every element.

    On a CPU block by block (``_FAST_BLOCK`` elements: the proof's passes and the identity's
    find the block in the cache); on other devices the whole tensor is one block (every proof
    reads its extremes back to the host).  Any block the proof does not cover ends the fast path.
    """
    if a.shape != b.shape:
        return None
    int_dtype = _int_view_dtype(fmt)
    a_bits = a.contiguous().view(int_dtype).reshape(-1)
    b_bits = b.contiguous().view(int_dtype).reshape(-1)
    size = a_bits.numel()
    if size == 0:
        return None
    block = _FAST_BLOCK if a_bits.device.type == "cpu" else size
    result = torch.empty_like(a_bits)
    scratch = torch.empty(min(block, size), dtype=int_dtype, device=a_bits.device)
    for start in range(0, size, block):
        piece = slice(start, start + block)
        x, y, out = a_bits[piece], b_bits[piece], result[piece]
        magnitudes = scratch[: x.numel()]
        torch.bitwise_and(x, fmt.magnitude_mask, out=magnitudes)
        a_min, a_max = (int(v) for v in torch.aminmax(magnitudes))
        torch.bitwise_and(y, fmt.magnitude_mask, out=magnitudes)
        b_min, b_max = (int(v) for v in torch.aminmax(magnitudes))
        if not divide and min(a_min, b_min) == 0:
            zeros_result = _pam_mul_with_zeros(a_bits, b_bits, fmt)
            return None if zeros_result is None else zeros_result.view(a.shape)
        if not _products_provably_normal(a_min, a_max, b_min, b_max, fmt, divide=divide):
            return None
        if divide:
            torch.sub(x, y, out=out).add_(fmt.one)
        else:
            torch.add(x, y, out=out).sub_(fmt.one)
        if fmt.padding_bits:  # patterns narrower than their container wrap at 2**width
            out.bitwise_and_(fmt.pattern_mask)
    return result.view(a.shape).view(_float_dtype(fmt))


def _products_provably_normal(
    a_min: int, a_max: int, b_min: int, b_max: int, fmt: FloatFormat, *, divide: bool = False
) -> bool:
    """Whether magnitudes in [a_min, a_max] x [b_min, b_max] are normal with normal PAM products
    (``divide=True``: quotients)."""
    lowest, highest = fmt.min_normal, fmt.max_finite
    if not (lowest <= a_min and lowest <= b_min and a_max <= highest and b_max <= highest):
        return False
    if divide:
        return a_min - b_max + fmt.one >= lowest and a_max - b_min + fmt.one <= highest
    return a_min + b_min - fmt.one >= lowest and a_max + b_max - fmt.one <= highest


def _pam_mul_with_zeros(a_bits: torch.Tensor, b_bits: torch.Tensor, fmt: FloatFormat) -> torch.Tensor | None:
    """The integer identity when some operands are zero: their products are signed zeros, and the range
    proof looks at the nonzero operands only."""
    if not fmt.has_negative_zero:
        # fnuz: magnitude 0 with the sign bit is the NaN, not a zero; NaN operands take the general path.
        nan_bits = -fmt.sign_mask if not fmt.padding_bits else fmt.sign_mask
        if bool((a_bits == nan_bits).any()) or bool((b_bits == nan_bits).any()):
            return None
    result = torch.bitwise_and(a_bits, fmt.magnitude_mask)
    scratch = torch.bitwise_and(b_bits, fmt.magnitude_mask)
    highest = fmt.max_finite
    a_zero, b_zero = result == 0, scratch == 0
    zeros = a_zero | b_zero
    # Zeros cannot raise a maximum; for the minima they are replaced by a neutral largest value.
    a_min, a_max = int(torch.where(a_zero, highest, result).min()), int(result.max())
    b_min, b_max = int(torch.where(b_zero, highest, scratch).min()), int(scratch.max())
    if not _products_provably_normal(a_min, a_max, b_min, b_max, fmt):
        return None
    result.sub_(fmt.one).add_(scratch)
    result.masked_fill_(zeros, 0)
    torch.bitwise_xor(a_bits, b_bits, out=scratch)
    scratch.bitwise_and_(-(1 << (fmt.width - 1)))
    if not fmt.has_negative_zero:  # docs/spec.md D2.15: a zero product is +0
        scratch.masked_fill_(zeros, 0)
    result.bitwise_or_(scratch)
    return result.view(_float_dtype(fmt))


def _fused_regular_product(
    a_bits: torch.Tensor, b_bits: torch.Tensor, magnitude_mask: int, one: int, lowest: int, highest: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Branch-free integer identity and its per-element validity, written for torch.compile to fuse.

    Every comparison is arranged so that no intermediate of a VALID element leaves the signed
    container: ``t = (|a| − one) + |b|`` is in [lowest, highest] exactly when valid.
    """
    a_magnitude = a_bits & magnitude_mask
    b_magnitude = b_bits & magnitude_mask
    a_less_one = a_magnitude - one
    valid = (
        (a_magnitude >= lowest)
        & (a_magnitude <= highest)
        & (b_magnitude >= lowest)
        & (b_magnitude <= highest)
        & (a_less_one >= lowest - b_magnitude)
        & (a_less_one <= highest - b_magnitude)
    )
    sign = (a_bits ^ b_bits) & ~magnitude_mask
    return (a_less_one + b_magnitude) | sign, valid.all()


_compiled_regular_product: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None


def _pam_mul_compiled(a: torch.Tensor, b: torch.Tensor, fmt: FloatFormat) -> torch.Tensor | None:
    global _compiled_regular_product
    if a.shape != b.shape or a.numel() == 0:
        return None
    if _compiled_regular_product is None:
        _compiled_regular_product = torch.compile(_fused_regular_product, dynamic=False)
    int_dtype = _int_view_dtype(fmt)
    result, valid = _compiled_regular_product(
        a.contiguous().view(int_dtype),
        b.contiguous().view(int_dtype),
        fmt.magnitude_mask,
        fmt.one,
        fmt.min_normal,
        fmt.max_finite,
    )
    return result.view(_float_dtype(fmt)) if bool(valid) else None


def _pam_mul_value(a: Tensor, b: Tensor, fmt: FloatFormat, mode: str, compiled: bool = False) -> Tensor:
    fast = _pam_mul_compiled(a, b, fmt) if compiled else None
    if fast is None:
        fast = _pam_mul_regular(a, b, fmt)
    return fast if fast is not None else _pam_mul_general(a, b, fmt, mode)


def _pam_div_value(a: Tensor, b: Tensor, fmt: FloatFormat, mode: str) -> Tensor:
    fast = _pam_div_regular(a, b, fmt)
    if fast is not None:
        return fast
    m = fmt.mantissa_bits
    da, db = _decode(a, fmt, mode), _decode(b, fmt, mode)
    negative = da.negative ^ db.negative
    difference = da.fraction - db.fraction
    borrow = (difference < 0).to(torch.int64)
    significand = torch.where(borrow == 1, difference + (2 << m), difference + (1 << m))
    exp2 = da.exponent - db.exponent - borrow - m
    magnitude = _round_magnitude(significand, exp2, None, fmt, mode, leading=m)
    nan = _quotient_is_nan(da, db)
    inf = da.is_inf | db.is_zero
    zero = da.is_zero | db.is_inf
    return _assemble(negative, magnitude, fmt, nan=nan, inf=inf, zero=zero)


def _pa_log2_value(x: Tensor, fmt: FloatFormat, mode: str) -> Tensor:
    m = fmt.mantissa_bits
    d = _decode(x, fmt, mode)
    fixed_point = (d.exponent << m) + d.fraction  # (E + M) · 2**m, exact
    negative = fixed_point < 0
    significand, exp2, sticky = _limit_significand(
        fixed_point.abs(), torch.full_like(fixed_point, -m), torch.zeros_like(negative)
    )
    magnitude = _round_magnitude(significand, exp2, sticky, fmt, mode)
    negative = (negative & d.is_finite_nonzero) | d.is_zero
    return _assemble(negative, magnitude, fmt, nan=d.is_nan, inf=d.is_inf | d.is_zero)


def _pa_exp2_value(y: Tensor, fmt: FloatFormat, mode: str) -> Tensor:
    m = fmt.mantissa_bits
    d = _decode(y, fmt, mode)
    # Beyond |y| >= 2**12 every format over- or underflows; clamping keeps the shifts small.
    huge = d.is_finite_nonzero & (d.exponent >= 12)
    exponent = torch.where(huge, 12, d.exponent)
    fraction = torch.where(huge | d.is_zero, 0, d.fraction)
    significand = torch.where(d.is_zero, 0, fraction + (1 << m))  # |y| = significand · 2**(E − m)
    # floor(y · 2**kept_bits) with kept_bits fraction bits of y kept exactly, the rest folded into sticky.
    fraction_bits = m - exponent
    kept_bits = fraction_bits.clamp(min=0, max=_SIG_LIMIT_BITS - 1)
    drop = (fraction_bits - kept_bits).clamp(min=0, max=62)
    truncated = significand >> drop
    inexact = (truncated << drop) != significand
    left = (-fraction_bits).clamp(min=0)
    scaled = torch.where(fraction_bits >= 0, truncated, significand << left)
    scaled = torch.where(d.negative, -scaled - inexact.to(torch.int64), scaled)
    floor_y = scaled >> kept_bits
    one_plus_fraction = (scaled & ((1 << kept_bits) - 1)) + (1 << kept_bits)
    magnitude = _round_magnitude(one_plus_fraction, floor_y - kept_bits, inexact, fmt, mode)
    positive = torch.zeros_like(d.negative)
    zero = d.is_inf & d.negative
    inf = d.is_inf & ~d.negative
    return _assemble(positive, magnitude, fmt, nan=d.is_nan, inf=inf, zero=zero)


def _quotient_is_nan(da: _Decoded, db: _Decoded) -> Tensor:
    return da.is_nan | db.is_nan | (da.is_zero & db.is_zero) | (da.is_inf & db.is_inf)


def _product_is_nan(da: _Decoded, db: _Decoded) -> Tensor:
    return da.is_nan | db.is_nan | (da.is_inf & db.is_zero) | (da.is_zero & db.is_inf)


# ---- slopes: exact derivatives, signed powers of two ------------------------------------------------------


@dataclass
class _Slope:
    """A derivative that is a signed power of two per element, held exactly, or a special class.

    ``(−1)**negative · 2**exponent`` where none of the masks is set; ``exponent`` may lie
    outside the format's range (it is never rounded on its own: see :func:`_times_slope`).
    """

    negative: Tensor  # bool
    exponent: Tensor  # int64
    nan: Tensor
    inf: Tensor
    zero: Tensor

    def decoded(self, fmt: FloatFormat) -> _Decoded:
        """The slope as a decoded operand of ⊡ (fraction 0: a power of two)."""
        return _Decoded(
            self.negative,
            self.exponent,
            torch.zeros_like(self.exponent),
            self.nan,
            self.inf,
            self.zero & ~self.nan,
            fmt.mantissa_bits,
        )


def _fraction_or_zero(d: _Decoded) -> Tensor:
    """The fraction, 0 for zeros and infinities (D2.5: a = ±0 or ±inf uses M = 0)."""
    return torch.where(d.is_zero | d.is_inf, 0, d.fraction)


def _mul_slope(da: _Decoded, db: _Decoded, fmt: FloatFormat) -> _Slope:
    """d(a ⊡ b)/da = sign(b) · 2**(Eb + [Ma + Mb >= 1]) with the special cases of docs/spec.md D2.5."""
    carry = (_fraction_or_zero(da) + db.fraction) >> fmt.mantissa_bits
    shape = torch.broadcast_shapes(da.negative.shape, db.negative.shape)
    exponent = (db.exponent + carry).expand(shape)
    return _Slope(
        db.negative.expand(shape),
        exponent,
        _product_is_nan(da, db).expand(shape),
        db.is_inf.expand(shape),
        db.is_zero.expand(shape),
    )


def _div_slopes(da: _Decoded, db: _Decoded, fmt: FloatFormat) -> tuple[_Slope, _Slope]:
    """d(a ⊘ b)/da and d(a ⊘ b)/db (docs/spec.md D2.12).

    With ``c = 1`` on the piece where ``|r| = 2**(Ea − Eb − 1)(2 + Ma − Mb)`` (``Ma < Mb``):
    ``d/da = sign(b) · 2**(−Eb − c)`` and ``d/db = −sign(a) · 2**(Ea − 2 Eb − c)``.  At the
    breakpoint ``Ma = Mb`` each takes the piece to the right in its own operand's magnitude
    (as D2.5 does): ``c = [Ma < Mb]`` for ``d/da``, ``c = [Ma <= Mb]`` for ``d/db``.
    """
    a_fraction = _fraction_or_zero(da)
    borrow_a = (a_fraction < db.fraction).to(torch.int64)
    borrow_b = (a_fraction <= db.fraction).to(torch.int64)
    shape = torch.broadcast_shapes(da.negative.shape, db.negative.shape)
    nan = _quotient_is_nan(da, db).expand(shape)
    slope_a = _Slope(
        db.negative.expand(shape),
        (-db.exponent - borrow_a).expand(shape),
        nan,
        db.is_zero.expand(shape),  # a ⊘ b grows without bound as b -> 0
        db.is_inf.expand(shape),
    )
    slope_b = _Slope(
        (~da.negative).expand(shape),
        (da.exponent - 2 * db.exponent - borrow_b).expand(shape),
        nan,
        (da.is_inf | db.is_zero).expand(shape),
        (da.is_zero | db.is_inf).expand(shape),  # 0 ⊘ b is constant
    )
    return slope_a, slope_b


def _log2_slope(d: _Decoded) -> _Slope:
    """d pa_log2(x)/dx = sign(x) · 2**−E; ±inf at ±0, ±0 at ±inf (docs/spec.md D2.12)."""
    return _Slope(d.negative, -d.exponent, d.is_nan, d.is_zero, d.is_inf)


# |floor(y)| beyond this gives a slope 2**floor(y) that over- or underflows every g of every format.
_EXP2_FLOOR_LIMIT = 1 << 13


def _exp2_slope(d: _Decoded, fmt: FloatFormat) -> _Slope:
    """d pa_exp2(y)/dy = 2**floor(y); +0 at −inf, +inf at +inf, 1 at ±0 (docs/spec.md D2.12).

    ``floor(y)`` by integer arithmetic on the fields (a float floor would read a
    subnormal y as zero under a host DAZ flag).
    """
    m = fmt.mantissa_bits
    finite = d.is_finite_nonzero
    exponent = torch.where(finite, d.exponent, 0).clamp(max=14)  # |y| >= 2**14: saturated below
    significand = torch.where(finite, d.fraction + (1 << m), 0)  # |y| = significand · 2**(E − m)
    right = (m - exponent).clamp(min=0, max=62)
    left = (exponent - m).clamp(min=0)
    whole = torch.where(exponent >= m, significand << left, significand >> right)  # floor(|y|)
    exact = (whole << right) == significand
    floor_y = torch.where(d.negative, -whole - (~exact & (exponent < m)).to(torch.int64), whole)
    floor_y = floor_y.clamp(-_EXP2_FLOOR_LIMIT, _EXP2_FLOOR_LIMIT)
    positive = torch.zeros_like(d.negative)
    return _Slope(positive, floor_y, d.is_nan, d.is_inf & ~d.negative, d.is_inf & d.negative)


def _times_slope(g: Tensor, slope: _Slope, fmt: FloatFormat, mode: str) -> Tensor:
    """``g ⊡ s`` for a slope ``s`` held exactly: ``g · s`` rounded once (RNE), no multiplication.

    Where ``s`` is representable in the format this is ``pam_mul(g, s)`` (⊡ with a power of
    two is exact, docs/spec.md F2.2); where ``s`` itself would over- or underflow, rounding
    ``s`` first would lose what ``g · s`` keeps, so it is never materialised.
    """
    negative, magnitude, nan, inf, zero = _mul_fields(_decode(g, fmt, mode), slope.decoded(fmt), fmt, mode)
    return _assemble(negative, magnitude, fmt, nan=nan, inf=inf, zero=zero)


def _round_slope(slope: _Slope, fmt: FloatFormat, mode: str) -> Tensor:
    """The slope rounded once to the format (it can overflow, or be subnormal)."""
    ones = torch.ones_like(slope.exponent)
    magnitude = _round_magnitude(ones, slope.exponent, None, fmt, mode, leading=0)
    return _assemble(slope.negative, magnitude, fmt, nan=slope.nan, inf=slope.inf, zero=slope.zero)


# ---- autograd --------------------------------------------------------------------------------------------


def _needs_graph(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _negated(x: Tensor) -> Tensor:
    """``−x`` by flipping the sign bit (every format, fp8 included; differentiable: the same flip)."""
    return _Negate.apply(x) if _needs_graph(x) else _flip_sign(x)


def _flip_sign(x: Tensor) -> Tensor:
    fmt = formats.get(x.dtype)
    bits = x.contiguous().view(_int_view_dtype(fmt))
    if not fmt.has_negative_zero:
        # fnuz: -(+0) is +0 (docs/spec.md D2.15) and the one NaN (the pattern of -0) stays NaN.
        sign = torch.where((bits & fmt.magnitude_mask) == 0, 0, _int_sign_bit(fmt)).to(bits.dtype)
        return (bits ^ sign).view(x.dtype)
    return (bits ^ _int_sign_bit(fmt)).view(x.dtype)


def _int_sign_bit(fmt: FloatFormat) -> int:
    """The sign bit as a value of the signed container (the most negative one)."""
    return -(1 << (fmt.width - 1))


class _Negate(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return _flip_sign(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return _negated(grad)


class _TimesSlope(torch.autograd.Function):
    """``g ⊡ s`` for a constant exact slope ``s``: linear in ``g``, so its backward is itself."""

    @staticmethod
    def forward(ctx: Any, g: Tensor, slope: _Slope, mode: str) -> Tensor:
        ctx.slope, ctx.mode = slope, mode
        return _times_slope(g, slope, formats.get(g.dtype), mode)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return _scaled_by_slope(grad, ctx.slope, ctx.mode), None, None


def _scaled_by_slope(g: Tensor, slope: _Slope, mode: str) -> Tensor:
    if _needs_graph(g):
        return _TimesSlope.apply(g, slope, mode)
    return _times_slope(g, slope, formats.get(g.dtype), mode)


def _ln2(like: Tensor) -> Tensor:
    """ln 2 rounded once to ``like``'s format, shaped like it (a constant of the approximate backward)."""
    return torch.full_like(like, math.log(2), requires_grad=False)


@dataclass(frozen=True)
class _Operation:
    """One differentiable PA operation: its value and its two derivatives (docs/spec.md D2.11).

    The entries below look their functions up when called, so each formula has one home
    (a patched ``_div_slopes``, say, is what every caller sees).
    """

    name: str
    value: Callable[..., Tensor]  # (*inputs, fmt, mode) -> output
    exact_slopes: Callable[[Sequence[_Decoded], FloatFormat], tuple[_Slope, ...]]
    approx_derivatives: Callable[[Sequence[Tensor], Tensor, str], tuple[Tensor, ...]]


def _mul_exact(d: Sequence[_Decoded], fmt: FloatFormat) -> tuple[_Slope, ...]:
    return _mul_slope(d[0], d[1], fmt), _mul_slope(d[1], d[0], fmt)


def _div_approx(inputs: Sequence[Tensor], out: Tensor, mode: str) -> tuple[Tensor, ...]:
    _, b = inputs
    ones = torch.ones_like(b)
    # d(a/b)/da = 1/b and d(a/b)/db = −(a/b)/b, with the forward's quotient for a/b
    return pam_div(ones, b, mode=mode), pam_div(_negated(out), b, mode=mode)


def _log2_approx(inputs: Sequence[Tensor], out: Tensor, mode: str) -> tuple[Tensor, ...]:
    (x,) = inputs
    return (pam_div(torch.ones_like(x), pam_mul(x, _ln2(x), mode=mode), mode=mode),)  # 1/(x ln 2)


def _exp2_approx(inputs: Sequence[Tensor], out: Tensor, mode: str) -> tuple[Tensor, ...]:
    return (pam_mul(out, _ln2(out), mode=mode),)  # 2^y ln 2, with the forward's 2^y


_MUL = _Operation(
    "pam_mul",
    lambda a, b, fmt, mode, compiled=False: _pam_mul_value(a, b, fmt, mode, compiled),
    lambda d, fmt: _mul_exact(d, fmt),
    lambda inputs, out, mode: (inputs[1], inputs[0]),  # the product rule, products as ⊡
)
_DIV = _Operation(
    "pam_div",
    lambda a, b, fmt, mode, compiled=False: _pam_div_value(a, b, fmt, mode),
    lambda d, fmt: _div_slopes(d[0], d[1], fmt),
    lambda inputs, out, mode: _div_approx(inputs, out, mode),
)
_LOG2 = _Operation(
    "pa_log2",
    lambda x, fmt, mode, compiled=False: _pa_log2_value(x, fmt, mode),
    lambda d, fmt: (_log2_slope(d[0]),),
    lambda inputs, out, mode: _log2_approx(inputs, out, mode),
)
_EXP2 = _Operation(
    "pa_exp2",
    lambda y, fmt, mode, compiled=False: _pa_exp2_value(y, fmt, mode),
    lambda d, fmt: (_exp2_slope(d[0], fmt),),
    lambda inputs, out, mode: _exp2_approx(inputs, out, mode),
)


def _sum_to_shape(grad: Tensor, shape: torch.Size) -> Tensor:
    """A broadcast operand's gradient: summed over the broadcast dimensions in the accumulator dtype."""
    if grad.shape == shape:
        return grad
    return round_to_dtype(grad.to(accumulator_dtype(grad.dtype)).sum_to_size(shape), grad.dtype)


class _Elementwise(torch.autograd.Function):
    """A PA operation with the backward chosen by ``backward`` (module docstring)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, operation: _Operation, mode: str, backward: str, compiled: bool, *inputs: Tensor
    ) -> Tensor:
        fmt = formats.get(inputs[0].dtype)
        out = operation.value(*inputs, fmt, mode, compiled)
        ctx.operation, ctx.mode, ctx.backward = operation, mode, backward
        ctx.save_for_backward(*inputs, out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        *inputs, out = ctx.saved_tensors
        operation: _Operation = ctx.operation
        fmt = formats.get(out.dtype)
        wanted = ctx.needs_input_grad[4:]
        if ctx.backward == "exact":
            # the slopes are piecewise constant: no graph through them, only through grad
            decoded = [_decode(x.detach(), fmt, ctx.mode) for x in inputs]
            slopes = operation.exact_slopes(decoded, fmt)
            grads = [
                _scaled_by_slope(grad, slope, ctx.mode) if want else None
                for slope, want in zip(slopes, wanted, strict=True)
            ]
        else:
            derivatives = operation.approx_derivatives(inputs, out, ctx.mode)
            grads = [
                pam_mul(grad, derivative, mode=ctx.mode) if want else None
                for derivative, want in zip(derivatives, wanted, strict=True)
            ]
        reduced = [
            None if g is None else _sum_to_shape(g, x.shape) for g, x in zip(grads, inputs, strict=True)
        ]
        return (None, None, None, None, *reduced)


def _differentiable(
    operation: _Operation,
    inputs: tuple[Tensor, ...],
    fmt: FloatFormat,
    mode: str,
    backward: str,
    compiled: bool = False,
) -> Tensor:
    backward = check_backward(backward)
    if _needs_graph(*inputs):  # float dtypes only: uint8 bit patterns (fp6, fp4) never require grad
        return _Elementwise.apply(operation, mode, backward, compiled, *inputs)
    return operation.value(*inputs, fmt, mode, compiled)


# ---- public element-wise operations --------------------------------------------------------------------


def pam_mul(
    a: Tensor,
    b: Tensor,
    *,
    mode: str = "ieee",
    compiled: bool = False,
    backward: str = "approx",
    fmt: object = None,
) -> Tensor:
    """Piecewise-affine product a ⊡ b, element-wise with broadcasting, in the operands' dtype.

    sign = sign(a) XOR sign(b); with |x| = 2**E (1 + M): if Ma + Mb < 1 then
    |r| = 2**(Ea+Eb) (1 + Ma + Mb), else 2**(Ea+Eb+1) (Ma + Mb); rounded once (RNE).
    NaN in → NaN; ±inf × 0 → NaN; ±inf × nonzero → ±inf; ±0 × finite → signed zero.

    ``compiled=True`` (opt-in) runs the common case -- equal shapes, every input
    and product normal -- as one ``torch.compile``-fused kernel (compiled once per
    dtype and shape, seconds each: not for tests or one-off calls); anything else
    takes the eager paths, so results are the same bits either way.

    ``backward`` (used when an input requires grad): ``"approx"`` gives ``g ⊡ b`` and
    ``g ⊡ a`` (the product rule, as :class:`~revcheck.nn.pam.PAMMatmul`'s ``"approx"``);
    ``"exact"`` gives ``g ⊡ pam_mul_grad(a, b)`` and ``g ⊡ pam_mul_grad(b, a)``, the
    slope held exactly (docs/spec.md D2.11).

    ``fmt=`` names the format of ``uint8`` bit-pattern operands (fp6, fp4; docs/spec.md D1.10).

    >>> import torch
    >>> pam_mul(torch.tensor([1.5, -3.0]), torch.tensor([1.5, 2.0]))
    tensor([ 2., -6.])
    >>> a = torch.tensor([1.5], requires_grad=True)
    >>> pam_mul(a, torch.tensor([1.5]), backward="exact").backward()
    >>> a.grad  # the slope of the piece: 2**(0 + [0.5 + 0.5 >= 1])
    tensor([2.])
    """
    a, b, fmt_ = _binary_operands(a, b, "pam_mul", fmt)
    return _differentiable(_MUL, (a, b), fmt_, check_mode(mode), backward, compiled)


def pam_div(
    a: Tensor, b: Tensor, *, mode: str = "ieee", backward: str = "approx", fmt: object = None
) -> Tensor:
    """Piecewise-affine quotient a ⊘ b, element-wise with broadcasting, in the operands' dtype.

    If Ma >= Mb: |r| = 2**(Ea−Eb) (1 + Ma − Mb), else 2**(Ea−Eb−1) (2 + Ma − Mb);
    rounded once (RNE).  x/±0 → ±inf (x ≠ 0), 0/0 and inf/inf → NaN,
    finite/inf → signed zero, inf/finite → ±inf.

    ``backward``: ``"approx"`` gives ``g ⊡ (1 ⊘ b)`` and ``g ⊡ (−(a ⊘ b) ⊘ b)``;
    ``"exact"`` gives ``g ⊡ sign(b)·2**(−Eb − c)`` and ``g ⊡ (−sign(a)·2**(Ea − 2Eb − c))``
    with ``c = [Ma < Mb]`` (docs/spec.md D2.12).

    >>> import torch
    >>> pam_div(torch.tensor([2.0, 3.0]), torch.tensor([1.5, -1.0]))
    tensor([ 1.5000, -3.0000])
    """
    a, b, fmt_ = _binary_operands(a, b, "pam_div", fmt)
    return _differentiable(_DIV, (a, b), fmt_, check_mode(mode), backward)


def pam_mul_grad(a: Tensor, b: Tensor, *, mode: str = "ieee", fmt: object = None) -> Tensor:
    """d(a ⊡ b)/da = sign(b) · 2**(Eb + [Ma + Mb >= 1]), element-wise, in the operands' dtype.

    The slope of the affine piece that contains ``a``: a signed power of two,
    rounded once to the format (it can overflow, or be subnormal).  Special
    cases, as the oracle's: NaN where the forward product is NaN (NaN in,
    ±inf ⊡ ±0, ±0 ⊡ ±inf); b = ±0 → zero with b's sign (a ⊡ 0 is constant);
    b = ±inf → ±inf with b's sign; a = ±0 or ±inf uses Ma = 0 (their fraction
    field), i.e. sign(b) · 2**Eb.

    No autograd: the slope is piecewise constant (zero derivative between breakpoints,
    none at them), so an input that requires grad (with grad enabled) is refused
    rather than silently detached; differentiate ``pam_mul(..., backward="exact")``,
    whose gradient this is, or pass ``a.detach()``.

    Raises
    ------
    UsageError
        If grad is enabled and ``a`` or ``b`` requires grad.

    >>> import torch
    >>> pam_mul_grad(torch.tensor([1.5, 1.25]), torch.tensor([1.5, -1.5]))
    tensor([ 2., -1.])
    """
    a, b, fmt = _binary_operands(a, b, "pam_mul_grad", fmt)
    mode = check_mode(mode)
    if _needs_graph(a, b):
        raise UsageError(
            "pam_mul_grad has no autograd: it is piecewise constant (its derivative is zero between "
            "breakpoints and undefined at them), so its result would be silently detached. Pass detached "
            "inputs (a.detach(), b.detach()), or differentiate pam_mul(a, b, backward='exact'), whose "
            "gradient it is"
        )
    slope = _mul_slope(_decode(a, fmt, mode), _decode(b, fmt, mode), fmt)
    return _round_slope(slope, fmt, mode)


def pa_log2(x: Tensor, *, mode: str = "ieee", backward: str = "approx", fmt: object = None) -> Tensor:
    """Piecewise-affine log2: E + M of |x| (the sign of x is ignored), in x's dtype, rounded once (RNE).

    ±0 → −inf (−max-finite for formats without inf), ±inf → +inf, NaN → NaN.

    ``backward``: ``"approx"`` gives ``g ⊡ (1 ⊘ (x ⊡ ln 2))``; ``"exact"`` gives
    ``g ⊡ sign(x)·2**−E`` (±inf at x = ±0, ±0 at x = ±inf; docs/spec.md D2.12).

    >>> import torch
    >>> pa_log2(torch.tensor([1.0, 3.0, 0.375]))
    tensor([ 0.0000,  1.5000, -1.5000])
    """
    fmt_ = _format_of_tensor(x, "pa_log2: input", fmt)
    return _differentiable(_LOG2, (x,), fmt_, check_mode(mode), backward)


def pa_exp2(y: Tensor, *, mode: str = "ieee", backward: str = "approx", fmt: object = None) -> Tensor:
    """Piecewise-affine exp2: 2**floor(y) · (1 + y − floor(y)), in y's dtype, rounded once (RNE).

    −inf → +0, +inf → +inf, NaN → NaN; ±0 → 1.

    ``backward``: ``"approx"`` gives ``g ⊡ (pa_exp2(y) ⊡ ln 2)``; ``"exact"`` gives
    ``g ⊡ 2**floor(y)`` (+0 at −inf, +inf at +inf; docs/spec.md D2.12).

    >>> import torch
    >>> pa_exp2(torch.tensor([0.0, 1.5, -0.5]))
    tensor([1.0000, 3.0000, 0.7500])
    """
    fmt_ = _format_of_tensor(y, "pa_exp2: input", fmt)
    return _differentiable(_EXP2, (y,), fmt_, check_mode(mode), backward)


# ---- matrix product --------------------------------------------------------------------------------------


def _matmul_operands(
    a: object, b: object, fmt: object = None
) -> tuple[torch.Tensor, torch.Tensor, FloatFormat]:
    fmt_a = _format_of_tensor(a, "pam_matmul: A", fmt)
    fmt_b = _format_of_tensor(b, "pam_matmul: B", fmt)
    assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
    if fmt_a is not fmt_b:
        raise TypeError(
            f"pam_matmul: A has dtype {a.dtype} but B has {b.dtype}; both must have the same dtype "
            "(convert one explicitly; nothing is upcast silently)"
        )
    if a.dim() < 2 or b.dim() < 2:
        raise ValueError(
            f"pam_matmul needs A (..., M, K) and B (..., K, N) with at least 2 dimensions each, got shapes "
            f"{tuple(a.shape)} and {tuple(b.shape)}; use x.unsqueeze(0) / x.unsqueeze(-1) for vectors"
        )
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(
            f"pam_matmul: inner dimensions differ: A is {tuple(a.shape)} (K={a.shape[-1]}), B is "
            f"{tuple(b.shape)} (K={b.shape[-2]}); A's last dimension must equal B's second to last"
        )
    if a.device != b.device:
        raise ValueError(f"pam_matmul: A is on {a.device} but B is on {b.device}; move one")
    try:
        torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"pam_matmul: batch dimensions {tuple(a.shape[:-2])} and {tuple(b.shape[:-2])} do not broadcast"
        ) from None
    return a, b, fmt_a


class _ProductFactory:
    """PAM outer products A[..., :, k] ⊡ B[..., k, :] in the accumulator format, for one k at a time.

    Operands are decoded once (subnormals flushed by the INPUT format in mode
    "ftz") and widened exactly to the accumulator's fraction width.  When every
    operand is finite and every product is provably a normal number (or a signed
    zero), a product is a single integer addition of magnitude bits; otherwise
    the general field arithmetic with rounding is used.
    """

    def __init__(self, a: torch.Tensor, b: torch.Tensor, fmt: FloatFormat, mode: str) -> None:
        self.acc = formats.accumulator_format(fmt)
        self.mode = mode
        batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        # k-major layouts: slicing one k is then a contiguous read.
        a_k = a.expand(*batch, *a.shape[-2:]).movedim(-1, 0).contiguous().unsqueeze(-1)  # K, ..., M, 1
        b_k = b.expand(*batch, *b.shape[-2:]).movedim(-2, 0).contiguous().unsqueeze(-2)  # K, ..., 1, N
        self.a = _decode(a_k, fmt, mode).widened(self.acc)
        self.b = _decode(b_k, fmt, mode).widened(self.acc)
        self.fast = self._regular()
        if self.fast:
            int_dtype = _int_view_dtype(self.acc)
            sign_value = -(1 << (self.acc.width - 1))

            def magnitude_bits(d: _Decoded) -> torch.Tensor:
                bits = ((d.exponent + self.acc.bias) << self.acc.mantissa_bits) + d.fraction
                return torch.where(d.is_zero, 0, bits).to(int_dtype)

            # Zero operands must give a zero product: keep masks (all ones / zero) are and-ed in.
            self.a_mag_minus_one = magnitude_bits(self.a) - self.acc.one
            self.b_mag = magnitude_bits(self.b)
            self.a_keep = torch.where(self.a.is_zero, 0, -1).to(int_dtype)
            self.b_keep = torch.where(self.b.is_zero, 0, -1).to(int_dtype)
            self.a_sign = torch.where(self.a.negative, sign_value, 0).to(int_dtype)
            self.b_sign = torch.where(self.b.negative, sign_value, 0).to(int_dtype)

    def _regular(self) -> bool:
        a, b, acc = self.a, self.b, self.acc
        # Exponents of the finite nonzero operands: every nonzero finite product is at least
        # 2**(low) (and a multiple of 2**(low - m)); infinite and NaN operands give inf/NaN products.
        a_e = a.exponent[a.is_finite_nonzero]
        b_e = b.exponent[b.is_finite_nonzero]
        if a_e.numel() == 0 or b_e.numel() == 0:
            self.min_product_exponent = acc.emax
            return not (bool((a.is_nan | a.is_inf).any()) or bool((b.is_nan | b.is_inf).any()))
        low = int(a_e.min()) + int(b_e.min())
        high = int(a_e.max()) + int(b_e.max()) + 1
        self.min_product_exponent = low
        if bool((a.is_nan | a.is_inf).any()) or bool((b.is_nan | b.is_inf).any()):
            return False
        return acc.emin <= low and high <= acc.emax

    def sums_stay_normal(self) -> bool:
        """Whether no product and no partial sum, in any order, can be subnormal (so no flag matters).

        Every finite product is zero or a multiple of ``2**(low − m)``, and so is every partial
        sum; if ``low − m >= emin`` each of them is zero, normal, infinite or NaN: float additions
        then see no subnormal operand and make no subnormal result, so neither a host
        flush-to-zero flag nor mode ``"ftz"``'s flushing can change them.
        """
        return self.min_product_exponent - self.acc.mantissa_bits >= self.acc.emin

    def product(self, k: int) -> torch.Tensor:
        if self.fast:
            magnitude = (self.a_mag_minus_one[k] + self.b_mag[k]) & (self.a_keep[k] & self.b_keep[k])
            return (magnitude | (self.a_sign[k] ^ self.b_sign[k])).view(_float_dtype(self.acc))
        a = self.a.select(lambda t: t[k])
        b = self.b.select(lambda t: t[k])
        negative, magnitude, nan, inf, zero = _mul_fields(a, b, self.acc, self.mode)
        return _assemble(negative, magnitude, self.acc, nan=nan, inf=inf, zero=zero)


def _flush_subnormal(x: torch.Tensor, acc: FloatFormat) -> torch.Tensor:
    bits = x.view(_int_view_dtype(acc))
    magnitude = bits & acc.magnitude_mask
    tiny = (magnitude < acc.min_normal) & (magnitude != 0)
    return torch.where(tiny, bits & -(1 << (acc.width - 1)), bits).view(x.dtype)


def _canonical_nans(x: torch.Tensor, acc: FloatFormat) -> torch.Tensor:
    nan = torch.isnan(x)
    if not bool(nan.any()):
        return x
    return torch.where(
        nan, torch.tensor(acc.canonical_nan, dtype=_int_view_dtype(acc), device=x.device).view(x.dtype), x
    )


def pam_matmul(
    a: Tensor,
    b: Tensor,
    *,
    order: str = "sequential",
    mode: str = "ieee",
    backward: str = "approx",
    fmt: object = None,
) -> Tensor:
    """PAM matrix product C = A ⊡@ B of A (..., M, K) and B (..., K, N), batch dimensions broadcast.

    Returns a tensor of the accumulator dtype (float64 for float64 inputs, float32
    otherwise).  Each product A[m, k] ⊡ B[k, n] is formed in the accumulator format
    after exact widening; ``order="sequential"`` (the canonical order) sums
    acc = +0.0, acc = fl(acc + p_k) for k = 0 … K−1 with round-to-nearest-even;
    ``order="pairwise"`` sums by a balanced tree (level by level, adjacent pairs,
    an odd last element carried up unchanged) and can only be bounded, not
    bit-exact, against the sequential definition.  In mode ``"ftz"`` subnormal
    inputs (in their own format), products and partial sums below the
    accumulator's smallest normal are signed zeros.  A NaN result is canonical.
    In ``"ieee"`` the result does not depend on the host's flush-to-zero flags
    (docs/spec.md D2.14).  ``fmt=`` names the format of ``uint8`` bit-pattern operands
    (fp6, fp4).

    With grad enabled and an input that requires grad, this is
    :class:`revcheck.nn.pam.PAMMatmul` (``backward``: ``"approx"`` or ``"exact"``, see
    :mod:`revcheck.nn.pam`), which needs ``B`` to be a matrix and the sequential order.

    Raises
    ------
    UsageError
        For inputs that require grad with a batched ``B`` or ``order="pairwise"`` (no
        autograd there: detach the inputs).

    >>> import torch
    >>> pam_matmul(torch.tensor([[1.5, 1.0]]), torch.tensor([[1.5], [2.0]]))
    tensor([[4.]])
    """
    a, b, fmt = _matmul_operands(a, b, fmt)
    mode = check_mode(mode)
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; accepted orders are {', '.join(map(repr, ORDERS))}")
    backward = check_backward(backward)
    if _needs_graph(a, b):
        if order != "sequential" or b.dim() != 2:
            raise UsageError(
                f"pam_matmul has autograd only for order='sequential' and a matrix B (K, N); got "
                f"order={order!r} and B of shape {tuple(b.shape)} with inputs that require grad. Detach "
                "the inputs (the result would otherwise be silently detached) or use PAMMatmul's layout"
            )
        from revcheck.nn.pam import PAMMatmul  # the autograd layer above this one

        return PAMMatmul.apply(a, b, mode, backward)  # type: ignore[no-any-return]
    factory = _ProductFactory(a, b, fmt, mode)
    acc = factory.acc
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    out_shape = (*batch, a.shape[-2], b.shape[-1])
    add = _adder(acc, mode, factory.sums_stay_normal())
    total = torch.zeros(out_shape, dtype=_float_dtype(acc), device=a.device)
    depth = a.shape[-1]
    if order == "sequential":
        for k in range(depth):
            total = add(total, factory.product(k))
    elif depth:
        level = [factory.product(k) for k in range(depth)]
        while len(level) > 1:
            pairs = [add(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            level = pairs + level[len(level) - len(level) % 2 :]
        # +0.0 + x, as the sequential order starts: it turns a −0 sum into +0.
        total = add(total, level[0])
    return _canonical_nans(total, acc)


def _adder(acc: FloatFormat, mode: str, sums_stay_normal: bool) -> Callable[[Tensor, Tensor], Tensor]:
    """``fl(x + y)`` in the accumulator format, immune to the host's FTZ/DAZ flags (docs/spec.md D2.14).

    Float addition where no subnormal can occur; in ``"ftz"`` float addition and then the flush
    (the operands are never subnormal there, and a subnormal sum is exact, so a host flag
    flushing it gives the same signed zero); otherwise, in ``"ieee"``, integer arithmetic.
    """
    if sums_stay_normal:
        return torch.add
    if mode == "ftz":

        def rounded(x: Tensor, y: Tensor) -> Tensor:
            return _flush_subnormal(x + y, acc)

    else:

        def rounded(x: Tensor, y: Tensor) -> Tensor:
            return _add_exact(x, y, acc, mode)

    def add(x: Tensor, y: Tensor) -> Tensor:
        return _RoundedAdd.apply(x, y, rounded) if _needs_graph(x, y) else rounded(x, y)

    return add


class _RoundedAdd(torch.autograd.Function):
    """``fl(x + y)`` computed on bits, with the gradient of ``x + y`` (the rounding is ignored, as for
    every derivative here), so that a backward built from these sums stays differentiable."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, y: Tensor, rounded: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        if x.shape != y.shape:
            raise ValueError(
                f"rounded addition of shapes {tuple(x.shape)} and {tuple(y.shape)}: equal shapes"
            )
        return rounded(x, y)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        return grad, grad, None


class _SequentialSum:
    """``acc = +0.0; acc = fl(acc + t)`` for each term ``t`` in turn, immune to the host's FTZ/DAZ flags.

    Float additions as long as every term seen so far is zero, infinite, NaN or at least
    ``2**(emin + m)`` (then every partial sum is a multiple of ``2**emin``: never subnormal);
    from the first smaller term on, the additions of :func:`_adder` (integer arithmetic in
    ``"ieee"``).  ``"ftz"`` flushes partial sums below the smallest normal.
    """

    def __init__(self, fmt: FloatFormat, mode: str) -> None:
        self.fmt, self.mode = fmt, mode
        self.total: Tensor | None = None
        self.stays_normal = True
        self.smallest_safe = (fmt.emin + fmt.mantissa_bits + fmt.bias) << fmt.mantissa_bits

    def add(self, term: Tensor) -> Tensor:
        if self.stays_normal:
            magnitude = term.detach().contiguous().view(_int_view_dtype(self.fmt)).to(torch.int64)
            magnitude = magnitude & self.fmt.magnitude_mask
            small = (magnitude != 0) & (magnitude < self.smallest_safe)
            self.stays_normal = not bool(small.any())
        total = torch.zeros_like(term) if self.total is None else self.total
        self.total = _adder(self.fmt, self.mode, self.stays_normal)(total, term)
        return self.total


def _times_mul_grad(g: Tensor, a: Tensor, b: Tensor, mode: str) -> Tensor:
    """``g ⊡ d(a ⊡ b)/da`` with the slope held exactly (one rounding; differentiable in ``g`` only)."""
    fmt = formats.get(a.dtype)
    slope = _mul_slope(_decode(a.detach(), fmt, mode), _decode(b.detach(), fmt, mode), fmt)
    return _scaled_by_slope(g, slope, mode)


# Exponent given to zeros in an addition: below every real exponent, so the other operand is the larger.
_ZERO_EXPONENT = -(1 << 20)


def _add_exact(x: Tensor, y: Tensor, fmt: FloatFormat, mode: str) -> Tensor:
    """``fl(x + y)`` on bit patterns: the exact sum rounded once (RNE), IEEE special cases.

    The algorithm of :func:`revcheck.oracle.rounding.add`: align the smaller operand to the
    larger with three guard bits and a sticky bit, add or subtract the significands as
    integers, round once.  An exact zero sum is +0 unless both addends are −0; NaN is
    canonical.  No float operation is involved, so no host flag can change it.
    """
    m = fmt.mantissa_bits
    dx, dy = _decode(x, fmt, mode), _decode(y, fmt, mode)

    def significand_and_exponent(d: _Decoded) -> tuple[Tensor, Tensor]:
        finite = d.is_finite_nonzero
        return torch.where(finite, d.fraction + (1 << m), 0), torch.where(finite, d.exponent, _ZERO_EXPONENT)

    x_significand, x_exponent = significand_and_exponent(dx)
    y_significand, y_exponent = significand_and_exponent(dy)
    x_is_bigger = (x_exponent > y_exponent) | ((x_exponent == y_exponent) & (x_significand >= y_significand))
    big_exponent = torch.where(x_is_bigger, x_exponent, y_exponent)
    small_exponent = torch.where(x_is_bigger, y_exponent, x_exponent)
    big_negative = torch.where(x_is_bigger, dx.negative, dy.negative)
    small_negative = torch.where(x_is_bigger, dy.negative, dx.negative)
    guard = 3
    big = torch.where(x_is_bigger, x_significand, y_significand) << guard
    small_full = torch.where(x_is_bigger, y_significand, x_significand) << guard
    distance = (big_exponent - small_exponent).clamp(max=62)
    small = small_full >> distance
    small = small | ((small << distance) != small_full).to(torch.int64)  # the sticky bit
    total = torch.where(big_negative == small_negative, big + small, big - small)
    magnitude = _round_magnitude(total, big_exponent - m - guard, None, fmt, mode)
    exact_zero = total == 0
    negative = torch.where(exact_zero, dx.negative & dy.negative, big_negative)
    any_inf = dx.is_inf | dy.is_inf
    negative = torch.where(any_inf, torch.where(dx.is_inf, dx.negative, dy.negative), negative)
    nan = dx.is_nan | dy.is_nan | (dx.is_inf & dy.is_inf & (dx.negative != dy.negative))
    return _assemble(negative, magnitude, fmt, nan=nan, inf=any_inf, zero=exact_zero & ~any_inf)
