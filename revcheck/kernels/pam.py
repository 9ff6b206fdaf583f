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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from revcheck import formats
from revcheck.formats import FloatFormat
from revcheck.modes import check_mode

__all__ = [
    "ORDERS",
    "accumulator_dtype",
    "pa_exp2",
    "pa_log2",
    "pam_div",
    "pam_matmul",
    "pam_mul",
    "pam_mul_grad",
]

ORDERS = ("sequential", "pairwise")

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
    if nan is not None and not fmt.has_nan:  # docs/spec.md D2.12: the zero with the result's sign
        magnitude = torch.where(nan, 0, magnitude)
    if not fmt.has_negative_zero:  # docs/spec.md D2.11: a zero result is +0
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


def _pam_mul_regular(a: torch.Tensor, b: torch.Tensor, fmt: FloatFormat) -> torch.Tensor | None:
    """I(|a|) + I(|b|) − I(1.0) in the format's own integer width, or None if some element is irregular.

    Proof first, from the extremes of the magnitude bits (one masking pass and
    one ``aminmax`` per operand): if every input is normal and every possible
    ``I(|a|) + I(|b|) − I(1.0)`` is a normal code, the plain wrapping sum
    ``a + b − I(1.0)`` of the full patterns is the PAM product of docs/spec.md §2, sign bit
    included (the signs add mod 2, and the magnitude part cannot carry into the
    sign bit).  Operands with zeros (ReLU outputs...) take :func:`_pam_mul_with_zeros`.
    """
    if a.shape != b.shape:
        return None
    int_dtype = _int_view_dtype(fmt)
    a_bits = a.contiguous().view(int_dtype)
    b_bits = b.contiguous().view(int_dtype)
    if a_bits.numel() == 0:
        return None
    # One scratch buffer, reused: fresh allocations cost page faults that dominate at this size.
    scratch = torch.bitwise_and(a_bits, fmt.magnitude_mask)
    a_min, a_max = (int(v) for v in torch.aminmax(scratch))
    torch.bitwise_and(b_bits, fmt.magnitude_mask, out=scratch)
    b_min, b_max = (int(v) for v in torch.aminmax(scratch))
    if min(a_min, b_min) == 0:
        return _pam_mul_with_zeros(a_bits, b_bits, fmt)
    if not _products_provably_normal(a_min, a_max, b_min, b_max, fmt):
        return None
    result = torch.add(a_bits, b_bits, out=scratch)
    result.sub_(fmt.one)
    if fmt.padding_bits:  # patterns narrower than their container wrap at 2**width
        result.bitwise_and_(fmt.pattern_mask)
    return result.view(_float_dtype(fmt))


def _products_provably_normal(a_min: int, a_max: int, b_min: int, b_max: int, fmt: FloatFormat) -> bool:
    """Whether magnitudes in [a_min, a_max] x [b_min, b_max] are normal with normal PAM products."""
    lowest, highest = fmt.min_normal, fmt.max_finite
    if not (lowest <= a_min and lowest <= b_min and a_max <= highest and b_max <= highest):
        return False
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
    if not fmt.has_negative_zero:  # docs/spec.md D2.11: a zero product is +0
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


def pam_mul(
    a: torch.Tensor, b: torch.Tensor, *, mode: str = "ieee", compiled: bool = False, fmt: object = None
) -> torch.Tensor:
    """Piecewise-affine product a ⊡ b, element-wise with broadcasting, in the operands' dtype.

    sign = sign(a) XOR sign(b); with |x| = 2**E (1 + M): if Ma + Mb < 1 then
    |r| = 2**(Ea+Eb) (1 + Ma + Mb), else 2**(Ea+Eb+1) (Ma + Mb); rounded once (RNE).
    NaN in → NaN; ±inf × 0 → NaN; ±inf × nonzero → ±inf; ±0 × finite → signed zero.

    ``compiled=True`` (opt-in) runs the common case -- equal shapes, every input
    and product normal -- as one ``torch.compile``-fused kernel (compiled once per
    dtype and shape, seconds each: not for tests or one-off calls); anything else
    takes the eager paths, so results are the same bits either way.

    >>> import torch
    >>> pam_mul(torch.tensor([1.5, -3.0]), torch.tensor([1.5, 2.0]))
    tensor([ 2., -6.])
    """
    a, b, fmt = _binary_operands(a, b, "pam_mul", fmt)
    mode = check_mode(mode)
    fast = _pam_mul_compiled(a, b, fmt) if compiled else None
    if fast is None:
        fast = _pam_mul_regular(a, b, fmt)
    return fast if fast is not None else _pam_mul_general(a, b, fmt, mode)


def pam_div(a: torch.Tensor, b: torch.Tensor, *, mode: str = "ieee", fmt: object = None) -> torch.Tensor:
    """Piecewise-affine quotient a ⊘ b, element-wise with broadcasting, in the operands' dtype.

    If Ma >= Mb: |r| = 2**(Ea−Eb) (1 + Ma − Mb), else 2**(Ea−Eb−1) (2 + Ma − Mb);
    rounded once (RNE).  x/±0 → ±inf (x ≠ 0), 0/0 and inf/inf → NaN,
    finite/inf → signed zero, inf/finite → ±inf.

    >>> import torch
    >>> pam_div(torch.tensor([2.0, 3.0]), torch.tensor([1.5, -1.0]))
    tensor([ 1.5000, -3.0000])
    """
    a, b, fmt = _binary_operands(a, b, "pam_div", fmt)
    mode = check_mode(mode)
    m = fmt.mantissa_bits
    da, db = _decode(a, fmt, mode), _decode(b, fmt, mode)
    negative = da.negative ^ db.negative
    difference = da.fraction - db.fraction
    borrow = (difference < 0).to(torch.int64)
    significand = torch.where(borrow == 1, difference + (2 << m), difference + (1 << m))
    exp2 = da.exponent - db.exponent - borrow - m
    magnitude = _round_magnitude(significand, exp2, None, fmt, mode, leading=m)
    nan = da.is_nan | db.is_nan | (da.is_zero & db.is_zero) | (da.is_inf & db.is_inf)
    inf = da.is_inf | db.is_zero
    zero = da.is_zero | db.is_inf
    return _assemble(negative, magnitude, fmt, nan=nan, inf=inf, zero=zero)


def pam_mul_grad(a: torch.Tensor, b: torch.Tensor, *, mode: str = "ieee", fmt: object = None) -> torch.Tensor:
    """d(a ⊡ b)/da = sign(b) · 2**(Eb + [Ma + Mb >= 1]), element-wise, in the operands' dtype.

    The slope of the affine piece that contains ``a``: a signed power of two,
    rounded once to the format (it can overflow, or be subnormal).  Special
    cases, as the oracle's: NaN where the forward product is NaN (NaN in,
    ±inf ⊡ ±0, ±0 ⊡ ±inf); b = ±0 → zero with b's sign (a ⊡ 0 is constant);
    b = ±inf → ±inf with b's sign; a = ±0 or ±inf uses Ma = 0 (their fraction
    field), i.e. sign(b) · 2**Eb.

    >>> import torch
    >>> pam_mul_grad(torch.tensor([1.5, 1.25]), torch.tensor([1.5, -1.5]))
    tensor([ 2., -1.])
    """
    a, b, fmt = _binary_operands(a, b, "pam_mul_grad", fmt)
    mode = check_mode(mode)
    da, db = _decode(a, fmt, mode), _decode(b, fmt, mode)
    a_fraction = torch.where(da.is_zero, 0, da.fraction)
    carry = (a_fraction + db.fraction) >> fmt.mantissa_bits
    exp2 = db.exponent + carry
    negative = db.negative.expand(torch.broadcast_shapes(a.shape, b.shape))
    magnitude = _round_magnitude(torch.ones_like(exp2), exp2, None, fmt, mode, leading=0)
    nan = da.is_nan | db.is_nan | (da.is_inf & db.is_zero) | (da.is_zero & db.is_inf)
    inf = db.is_inf
    zero = db.is_zero
    return _assemble(negative, magnitude, fmt, nan=nan, inf=inf, zero=zero)


def pa_log2(x: torch.Tensor, *, mode: str = "ieee", fmt: object = None) -> torch.Tensor:
    """Piecewise-affine log2: E + M of |x| (the sign of x is ignored), in x's dtype, rounded once (RNE).

    ±0 → −inf (−max-finite for formats without inf), ±inf → +inf, NaN → NaN.

    >>> import torch
    >>> pa_log2(torch.tensor([1.0, 3.0, 0.375]))
    tensor([ 0.0000,  1.5000, -1.5000])
    """
    fmt = _format_of_tensor(x, "pa_log2: input", fmt)
    mode = check_mode(mode)
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


def pa_exp2(y: torch.Tensor, *, mode: str = "ieee", fmt: object = None) -> torch.Tensor:
    """Piecewise-affine exp2: 2**floor(y) · (1 + y − floor(y)), in y's dtype, rounded once (RNE).

    −inf → +0, +inf → +inf, NaN → NaN; ±0 → 1.

    >>> import torch
    >>> pa_exp2(torch.tensor([0.0, 1.5, -0.5]))
    tensor([1.0000, 3.0000, 0.7500])
    """
    fmt = _format_of_tensor(y, "pa_exp2: input", fmt)
    mode = check_mode(mode)
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
        if bool((a.is_nan | a.is_inf).any()) or bool((b.is_nan | b.is_inf).any()):
            return False
        a_e = a.exponent[~a.is_zero]
        b_e = b.exponent[~b.is_zero]
        if a_e.numel() == 0 or b_e.numel() == 0:
            return True
        low = int(a_e.min()) + int(b_e.min())
        high = int(a_e.max()) + int(b_e.max()) + 1
        self.min_product_exponent = low
        return acc.emin <= low and high <= acc.emax

    def products_need_no_flush(self) -> bool:
        """Whether every nonzero partial sum is provably normal (so ftz needs no flushing)."""
        if not self.fast:
            return False
        # Partial sums are multiples of the smallest product's ulp, 2**(low − m).
        return getattr(self, "min_product_exponent", self.acc.emax) - self.acc.mantissa_bits >= self.acc.emin

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
    a: torch.Tensor, b: torch.Tensor, *, order: str = "sequential", mode: str = "ieee", fmt: object = None
) -> torch.Tensor:
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
    ``fmt=`` names the format of ``uint8`` bit-pattern operands (fp6, fp4).

    >>> import torch
    >>> pam_matmul(torch.tensor([[1.5, 1.0]]), torch.tensor([[1.5], [2.0]]))
    tensor([[4.]])
    """
    a, b, fmt = _matmul_operands(a, b, fmt)
    mode = check_mode(mode)
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; accepted orders are {', '.join(map(repr, ORDERS))}")
    factory = _ProductFactory(a, b, fmt, mode)
    acc = factory.acc
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    out_shape = (*batch, a.shape[-2], b.shape[-1])
    flush = mode == "ftz" and not factory.products_need_no_flush()
    total = torch.zeros(out_shape, dtype=_float_dtype(acc), device=a.device)
    depth = a.shape[-1]
    if order == "sequential":
        for k in range(depth):
            total = total + factory.product(k)
            if flush:
                total = _flush_subnormal(total, acc)
    elif depth:
        level = [factory.product(k) for k in range(depth)]
        while len(level) > 1:
            pairs = [level[i] + level[i + 1] for i in range(0, len(level) - 1, 2)]
            if flush:
                pairs = [_flush_subnormal(p, acc) for p in pairs]
            level = pairs + level[len(level) - len(level) % 2 :]
        # +0.0 + x, as the sequential order starts: it turns a −0 sum into +0.
        total = total + level[0]
    return _canonical_nans(total, acc)
