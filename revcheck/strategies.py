"""Hypothesis strategies for floating-point bit patterns, arrays, tensors, formats and devices.

Everything is generated as a *bit pattern* of the format under test, never as
a Python float that is then cast (a cast would round, and could never produce
most NaN payloads, subnormals of narrow formats, or fp8 values)::

    from revcheck import strategies as rst

    @given(a=rst.bit_arrays("bf16", (3, 4)), b=rst.bit_arrays("bf16", (3, 4)))
    def test_something(a, b): ...

Each pattern is drawn from one class (``"nan" "inf" "zero" "subnormal"
"normal"``, :data:`revcheck.bits.CLASSES`), so every class is reached often,
whatever the format.  Within a class the strategy mixes special values (first,
so that shrinking goes towards +0, 1.0, min/max normal...), TestFloat-style
significand patterns (walking ones and zeros, all ones, growing runs of ones)
on the exponents around the format's boundaries, and uniform random bits.
torch is imported only by :func:`tensors` and :func:`devices`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.extra import numpy as hnp

from revcheck import bits as _bits
from revcheck import formats as _formats
from revcheck.formats import FloatFormat

if TYPE_CHECKING:
    import torch

__all__ = [
    "bit_arrays",
    "bit_patterns",
    "devices",
    "format_classes",
    "formats",
    "significand_patterns",
    "tensors",
]

SIGNS = (None, "+", "-")
# The order in which classes are tried: Hypothesis shrinks towards the first.
_SHRINK_ORDER = ("zero", "normal", "subnormal", "inf", "nan")


def formats(*, names: Iterable[object] | None = None) -> st.SearchStrategy[FloatFormat]:
    """Formats from :data:`revcheck.formats.FORMATS` (all of them, or those ``names`` picks).

    ``names`` may hold anything :func:`revcheck.formats.get` accepts.
    """
    if names is None:
        return st.sampled_from([_formats.get(name) for name in _formats.names()])
    if isinstance(names, str):
        raise InvalidArgument(f"names={names!r} is a single string; pass a sequence: names=[{names!r}]")
    chosen = [_format(name) for name in names]
    if not chosen:
        raise InvalidArgument(f"names is empty; pick some of {', '.join(_formats.names())} or pass None")
    return st.sampled_from(chosen)


def format_classes(fmt: object) -> tuple[str, ...]:
    """The value classes ``fmt`` has, in :data:`revcheck.bits.CLASSES` order (no ``"inf"`` for fn formats)."""
    fmt_ = _format(fmt)
    return tuple(name for name in _bits.CLASSES if name != "inf" or fmt_.has_inf)


def significand_patterns(width: int) -> list[int]:
    """TestFloat-style patterns of a ``width``-bit field, simplest first, without repeats.

    All zeros, all ones, walking ones, walking zeros, runs of ones growing from
    the top and from the bottom.
    """
    mask = (1 << width) - 1
    candidates = [0, mask]
    candidates += [1 << k for k in reversed(range(width))]
    candidates += [mask ^ (1 << k) for k in reversed(range(width))]
    candidates += [mask ^ (mask >> k) for k in range(1, width)]
    candidates += [(1 << k) - 1 for k in range(1, width)]
    return list(dict.fromkeys(candidates))


def bit_patterns(
    fmt: object, *, classes: Iterable[str] | None = None, sign: str | None = None
) -> st.SearchStrategy[int]:
    """Bit patterns (Python ints) of ``fmt`` whose class is in ``classes`` and sign is ``sign``.

    ``classes``: some of ``("nan", "inf", "zero", "subnormal", "normal")``; None
    means every class the format has.  ``sign``: None for both signs, ``"+"``
    or ``"-"``.  Shrinks towards +0, then 1.0.
    """
    fmt_ = _format(fmt)
    chosen = _validate_classes(fmt_, classes)
    negative = _sign_strategy(sign)
    branches = [_class_magnitudes(fmt_, name) for name in _SHRINK_ORDER if name in chosen]
    if set(chosen) == set(format_classes(fmt_)):
        # Uniform over every pattern: the distribution of "any value" workloads.
        branches.append(st.integers(0, fmt_.magnitude_mask))
    sign_mask = fmt_.sign_mask
    return st.tuples(negative, st.one_of(branches)).map(
        lambda pair: pair[1] | sign_mask if pair[0] else pair[1]
    )


def bit_arrays(
    fmt: object,
    shape: int | tuple[int, ...] | st.SearchStrategy[tuple[int, ...]],
    *,
    classes: Iterable[str] | None = None,
    sign: str | None = None,
) -> st.SearchStrategy[np.ndarray[Any, Any]]:
    """NumPy arrays of ``fmt.uint_dtype`` holding patterns from :func:`bit_patterns`.

    ``shape`` is an int, a tuple, or a strategy such as
    ``hypothesis.extra.numpy.array_shapes()``.
    """
    fmt_ = _format(fmt)
    if not isinstance(shape, (int, tuple, st.SearchStrategy)) or isinstance(shape, bool):
        raise InvalidArgument(
            f"shape={shape!r} is a {type(shape).__name__}; pass an int, a tuple of ints, or a strategy "
            "such as hypothesis.extra.numpy.array_shapes()"
        )
    if (isinstance(shape, int) and shape < 0) or (isinstance(shape, tuple) and any(n < 0 for n in shape)):
        raise InvalidArgument(f"shape={shape!r} has a negative size; sizes must be >= 0")
    elements = bit_patterns(fmt_, classes=classes, sign=sign)
    return hnp.arrays(fmt_.uint_dtype, shape, elements=elements)


def tensors(
    fmt: object,
    shape: int | tuple[int, ...] | st.SearchStrategy[tuple[int, ...]],
    *,
    device: str = "cpu",
    classes: Iterable[str] | None = None,
    sign: str | None = None,
) -> st.SearchStrategy[torch.Tensor]:
    """torch tensors of ``fmt``'s dtype on ``device``, built from :func:`bit_arrays` bit for bit."""
    import torch

    fmt_ = _format(fmt)
    try:
        torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InvalidArgument(
            f"device={device!r} is not a torch device ({error}); use 'cpu', 'cuda', or draw from devices()"
        ) from None
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise InvalidArgument(
            f"device={device!r} but torch.cuda.is_available() is False; use device='cpu', draw the device "
            "from devices(), or take the `device` fixture of revcheck's pytest plugin"
        )
    return bit_arrays(fmt_, shape, classes=classes, sign=sign).map(
        lambda pattern: _bits.to_torch(pattern, fmt_, device)
    )


def devices() -> st.SearchStrategy[str]:
    """Device names available here: ``"cpu"``, plus ``"cuda"`` when torch sees a GPU."""
    import torch

    return st.sampled_from(["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])


# ---- per-class magnitudes ------------------------------------------------------------


def _class_magnitudes(fmt: FloatFormat, name: str) -> st.SearchStrategy[int]:
    if name == "zero":
        return st.just(0)
    if name == "inf":
        assert fmt.inf is not None
        return st.just(fmt.inf)
    if name == "nan":
        return _nan_magnitudes(fmt)
    if name == "subnormal":
        return _subnormal_magnitudes(fmt)
    return _normal_magnitudes(fmt)


def _nan_magnitudes(fmt: FloatFormat) -> st.SearchStrategy[int]:
    if fmt.nan_encoding == "fn":
        return st.just(fmt.canonical_nan)
    quiet_bit = 1 << (fmt.mantissa_bits - 1)
    payloads = [quiet_bit, 1, fmt.mantissa_mask, quiet_bit | 1, *significand_patterns(fmt.mantissa_bits)[1:]]
    return st.one_of(
        st.sampled_from(list(dict.fromkeys(payloads))),
        st.integers(1, fmt.mantissa_mask),
    ).map(lambda payload: fmt.exponent_mask | payload)


def _subnormal_magnitudes(fmt: FloatFormat) -> st.SearchStrategy[int]:
    specials = [fmt.min_subnormal, fmt.max_subnormal, 1 << (fmt.mantissa_bits - 1)]
    patterns = [p for p in significand_patterns(fmt.mantissa_bits) if p]
    return st.one_of(
        st.sampled_from(list(dict.fromkeys(specials + patterns))),
        st.integers(fmt.min_subnormal, fmt.max_subnormal),
    )


def _normal_magnitudes(fmt: FloatFormat) -> st.SearchStrategy[int]:
    step = 1 << fmt.mantissa_bits  # one binade
    half_ulp_of_one = 1 << (fmt.mantissa_bits - 1)
    specials = [
        fmt.one,
        fmt.one + step,  # 2.0
        fmt.one - step,  # 0.5
        fmt.one | half_ulp_of_one,  # 1.5
        fmt.one + 1,
        fmt.one - 1,
        fmt.min_normal,
        fmt.max_finite,
        fmt.min_normal + 1,
        fmt.max_finite - 1,
    ]
    exponents = [0, 1, -1, fmt.emin, fmt.emin + 1, fmt.emax - 1, fmt.emax]
    biased = list(dict.fromkeys(e + fmt.bias for e in exponents))
    boundary = st.builds(
        # In an fn format the top exponent with an all-ones significand is NaN: clamp to max finite.
        lambda exponent, significand: min(exponent << fmt.mantissa_bits | significand, fmt.max_finite),
        st.sampled_from(biased),
        st.sampled_from(significand_patterns(fmt.mantissa_bits)),
    )
    return st.one_of(
        st.sampled_from(list(dict.fromkeys(specials))),
        boundary,
        st.integers(fmt.min_normal, fmt.max_finite),
    )


# ---- argument checking ---------------------------------------------------------------


def _format(fmt: object) -> FloatFormat:
    try:
        return _formats.get(fmt)
    except _formats.UnsupportedFormatError as error:
        raise InvalidArgument(str(error)) from None


def _validate_classes(fmt: FloatFormat, classes: Iterable[str] | None) -> tuple[str, ...]:
    available = format_classes(fmt)
    if classes is None:
        return available
    if isinstance(classes, str):
        raise InvalidArgument(
            f"classes={classes!r} is a single string; pass a tuple of class names: classes=({classes!r},)"
        )
    chosen = tuple(classes)
    if not chosen:
        raise InvalidArgument(f"classes is empty; pick some of {available!r}, or pass None for all")
    unknown = [name for name in chosen if name not in _bits.CLASSES]
    if unknown:
        raise InvalidArgument(f"unknown classes {unknown!r}; use some of {_bits.CLASSES!r}")
    missing = [name for name in chosen if name not in available]
    if missing:
        raise InvalidArgument(
            f"{fmt.name} has no {' or '.join(missing)} values (it saturates instead of overflowing to "
            f"infinity); use some of {available!r}"
        )
    return chosen


def _sign_strategy(sign: str | None) -> st.SearchStrategy[bool]:
    """Whether the sign bit is set; shrinks towards positive."""
    if sign is None:
        return st.booleans()
    if sign in ("+", "-"):
        return st.just(sign == "-")
    raise InvalidArgument(f"sign={sign!r} is not accepted; use None (both signs), '+' or '-'")
