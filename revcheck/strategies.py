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
so that shrinking goes towards +0, 1.0, min/max normal...), the class's
TestFloat cases (:func:`testfloat_cases`: exponent rows around the format's
boundaries times walking-ones/zeros significands), and uniform random bits.

Besides random draws there are *counted* cases, as Berkeley TestFloat's
levels: :func:`testfloat_cases` (single operands) and :func:`testfloat_pairs`
(operand pairs) are deterministic sequences of known length, to enumerate in
full or to draw from (``.strategy()``, :func:`testfloat_values`).

The strategies follow Hypothesis' own (``hypothesis.extra.numpy``):

- arguments are validated lazily: a bad argument raises
  :class:`hypothesis.errors.InvalidArgument` when the strategy is first drawn
  from, not when the module that builds it is imported; a device this machine
  lacks raises :class:`DeviceUnavailableError`, which pytest and unittest report as
  a skip;
- :func:`bit_patterns`, :func:`normals_near_one` and :func:`testfloat_values`
  have reusable values (they are built from ``st.integers`` and
  ``st.sampled_from`` only), so ``hypothesis.extra.numpy.arrays`` fills arrays
  of them cheaply instead of drawing every element;
- every public strategy has a readable repr: ``bit_patterns('bf16')``.

torch is imported only when a :func:`tensors` or :func:`devices` strategy is drawn from.
"""

from __future__ import annotations

import functools
import unittest
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, overload

import numpy as np
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.extra import numpy as hnp

from revcheck import bits as _bits
from revcheck import formats as _formats
from revcheck.errors import UsageError
from revcheck.formats import FloatFormat

if TYPE_CHECKING:
    from typing import ParamSpec

    import torch

    P = ParamSpec("P")

__all__ = [
    "CountedCase",
    "CountedCases",
    "CountedPairs",
    "DeviceUnavailableError",
    "bit_arrays",
    "bit_patterns",
    "devices",
    "float_arrays",
    "format_classes",
    "formats",
    "normals_near_one",
    "significand_patterns",
    "tensors",
    "testfloat_cases",
    "testfloat_pairs",
    "testfloat_values",
]

SIGNS = (None, "+", "-")
# The order in which classes are tried: Hypothesis shrinks towards the first.
_SHRINK_ORDER = ("zero", "normal", "subnormal", "inf", "nan")
TESTFLOAT_LEVELS = (1, 2)

T = TypeVar("T")


class DeviceUnavailableError(unittest.SkipTest, UsageError):
    """A strategy was asked for a device this machine does not have; raised when it is drawn from.

    It is a :class:`unittest.SkipTest`: pytest (through its ``unittest`` plugin,
    on by default) and unittest report the test as *skipped* with this message,
    and Hypothesis re-raises it at once instead of shrinking; no pytest import
    is needed to raise it.  Outside a test runner (or under ``-p no:unittest``)
    it is an error saying what to use instead; it is also a
    :class:`revcheck.errors.UsageError` (a ``ValueError``), so revcheck's
    command-line tools report it as a usage error.
    """


# ---- lazy strategies -------------------------------------------------------------------------


def _hypothesis_lazy_strategy() -> Any:
    """Hypothesis' own lazy wrapper (lazy validation, ``name(arguments)`` repr), or None if it moved."""
    try:
        from hypothesis.strategies._internal.lazy import LazyStrategy
    except ImportError:  # pragma: no cover  (another Hypothesis: st.deferred keeps the laziness)
        return None
    return LazyStrategy


_LazyStrategy = _hypothesis_lazy_strategy()


def _lazy(definition: Callable[P, st.SearchStrategy[T]]) -> Callable[P, st.SearchStrategy[T]]:
    """Make a strategy function lazy, as Hypothesis' ``@defines_strategy`` does for its own.

    The returned function only records its arguments; ``definition`` runs (and
    validates them) when the strategy is first drawn from or validated.  Its
    repr is the call, as Hypothesis writes its own: ``bit_patterns('bf16', sign='+')``,
    ``bit_arrays(fmt='fp16', shape=3)`` (keywords once there are two positional
    parameters).  ``LazyStrategy`` is private to Hypothesis; should it move,
    ``st.deferred`` gives the same laziness with a ``deferred(bit_patterns('bf16'))`` repr.
    """

    @functools.wraps(definition)
    def accept(*args: P.args, **kwargs: P.kwargs) -> st.SearchStrategy[T]:
        if _LazyStrategy is not None:
            return _LazyStrategy(definition, args, kwargs)  # type: ignore[no-any-return]

        def build() -> st.SearchStrategy[T]:
            return definition(*args, **kwargs)

        arguments = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
        build.__name__ = f"{definition.__name__}({', '.join(arguments)})"
        return st.deferred(build)

    return accept


# ---- formats and classes ---------------------------------------------------------------------


@_lazy
def formats(*, names: Iterable[object] | None = None) -> st.SearchStrategy[FloatFormat]:
    """Formats from :data:`revcheck.formats.FORMATS` (all of them, or those ``names`` picks).

    Parameters
    ----------
    names : iterable, optional
        Anything :func:`revcheck.formats.get` accepts (names, torch or NumPy
        dtypes, formats); None means every format, widest first.

    Raises
    ------
    hypothesis.errors.InvalidArgument
        When drawn from, for a single string, an empty sequence or an unknown format.

    Examples
    --------
    >>> formats(names=["bf16", "fp16"])
    formats(names=['bf16', 'fp16'])
    """
    if names is None:
        return st.sampled_from([_formats.get(name) for name in _formats.names()])
    if isinstance(names, str):
        raise InvalidArgument(f"names={names!r} is a single string; pass a sequence: names=[{names!r}]")
    chosen = [_format(name) for name in names]
    if not chosen:
        raise InvalidArgument(f"names is empty; pick some of {', '.join(_formats.names())} or pass None")
    return st.sampled_from(chosen)


def format_classes(fmt: object, sign: str | None = None) -> tuple[str, ...]:
    """The value classes ``fmt`` has (values of sign ``sign``), in :data:`revcheck.bits.CLASSES` order.

    No ``"inf"`` in a format without infinity, no ``"nan"`` in one without NaN
    (fp6, fp4).  In the fnuz formats the one NaN is the pattern of −0 (sign bit
    set) and the one zero is +0, so ``sign="+"`` has no ``"nan"`` and ``sign="-"``
    no ``"zero"``.

    Examples
    --------
    >>> format_classes("fp8_e4m3fn"), format_classes("fp4_e2m1fn")
    (('nan', 'zero', 'subnormal', 'normal'), ('zero', 'subnormal', 'normal'))
    >>> format_classes("fp8_e4m3fnuz", sign="-")
    ('nan', 'subnormal', 'normal')
    """
    fmt_ = _format(fmt)
    _validate_sign(sign)
    signs = _sign_masks(fmt_, sign)
    return tuple(name for name in _bits.CLASSES if any(_class_patterns(fmt_, name, s) for s in signs))


def _class_patterns(fmt: FloatFormat, name: str, sign_mask: int) -> list[int]:
    """A few patterns of class ``name`` and sign bit ``sign_mask``: empty iff the format has none."""
    if (name == "nan" and not fmt.has_nan) or (name == "inf" and not fmt.has_inf):
        return []
    specials, _, ranges = _class_magnitudes(fmt, name)
    candidates = [sign_mask | m for m in specials] + [sign_mask | low for low, _ in ranges]
    return [p for p in candidates if _pattern_class(fmt, p) == name and p & fmt.sign_mask == sign_mask]


def _pattern_class(fmt: FloatFormat, pattern: int) -> str:
    return str(_bits.classify(np.array([pattern], dtype=fmt.uint_dtype), fmt)[0])


def significand_patterns(width: int) -> list[int]:
    """TestFloat-style patterns of a ``width``-bit field, simplest first, without repeats.

    All zeros, all ones, walking ones, walking zeros, runs of ones growing from
    the top and from the bottom.  :func:`testfloat_cases` uses these and a few
    mixed ones (alternating bits, top and bottom bit), with names.

    >>> significand_patterns(3)
    [0, 7, 4, 2, 1, 3, 5, 6]
    """
    return [value for _, value in _named_significands(width, mixed=False)]


def _named_significands(width: int, *, mixed: bool = True) -> list[tuple[str, int]]:
    """(name, pattern) of the TestFloat significand patterns of a ``width``-bit field, simplest first.

    A pattern reached twice keeps its first name (``"top bit"`` rather than ``"top 1 ones"``).
    """
    if width == 0:
        return [("zero", 0)]
    mask = (1 << width) - 1

    def bit(k: int) -> str:
        return "top bit" if k == width - 1 else "bottom bit" if k == 0 else f"bit {k}"

    named = [("zero", 0), ("all ones", mask)]
    named += [(bit(k), 1 << k) for k in reversed(range(width))]  # walking one
    named += [(f"all ones but {bit(k)}", mask ^ (1 << k)) for k in reversed(range(width))]  # walking zero
    named += [(f"top {k} ones", mask ^ (mask >> k)) for k in range(1, width)]
    named += [(f"bottom {k} ones", (1 << k) - 1) for k in range(1, width)]
    if mixed:
        alternating = sum(1 << k for k in range(width - 1, -1, -2))  # 1010..., top bit set
        named += [
            ("alternating from the top", alternating),
            ("alternating from below the top", mask ^ alternating),
            ("top and bottom bits", 1 << (width - 1) | 1),
        ]
    first_name: dict[int, str] = {}
    for name, value in named:
        first_name.setdefault(value, name)
    return [(name, value) for value, name in first_name.items()]


# ---- bit patterns ----------------------------------------------------------------------------


@_lazy
def bit_patterns(
    fmt: object, *, classes: Iterable[str] | None = None, sign: str | None = None
) -> st.SearchStrategy[int]:
    """Bit patterns (Python ints) of ``fmt`` whose class is in ``classes`` and sign is ``sign``.

    Parameters
    ----------
    fmt : format
        Anything :func:`revcheck.formats.get` accepts.
    classes : iterable of str, optional
        Some of ``("nan", "inf", "zero", "subnormal", "normal")``; None means
        every class the format has (and then uniform random patterns too).
    sign : {None, "+", "-"}
        None for both signs.

    Raises
    ------
    hypothesis.errors.InvalidArgument
        When drawn from, for an unknown format, class or sign, or a class the format lacks.

    Notes
    -----
    Shrinks towards +0, then 1.0.  Built from ``st.sampled_from`` and
    ``st.integers`` only, so its values are reusable: ``hypothesis.extra.numpy.arrays``
    uses it as a fill.

    Examples
    --------
    >>> from hypothesis import find
    >>> bit_patterns("bf16", sign="+")
    bit_patterns('bf16', sign='+')
    >>> hex(find(bit_patterns("bf16", classes=["normal"]), lambda b: True))
    '0x3f80'
    >>> bit_patterns("bf16").has_reusable_values
    True
    """
    fmt_ = _format(fmt)
    _validate_sign(sign)
    chosen = _validate_classes(fmt_, classes, sign)
    return _bit_pattern_strategy(fmt_, chosen, sign)


@functools.lru_cache(maxsize=256)
def _bit_pattern_strategy(
    fmt: FloatFormat, chosen: tuple[str, ...], sign: str | None
) -> st.SearchStrategy[int]:
    signs = _sign_masks(fmt, sign)
    branches = [
        branch for name in _SHRINK_ORDER if name in chosen for branch in _class_branches(fmt, name, signs)
    ]
    if set(chosen) == set(format_classes(fmt, sign)):
        # Uniform over every pattern: the distribution of "any value" workloads.
        branches += [st.integers(s, s | fmt.magnitude_mask) for s in signs]
    return st.one_of(branches)


def _sign_masks(fmt: FloatFormat, sign: str | None) -> tuple[int, ...]:
    """Sign bits to OR into magnitudes, positive first (Hypothesis shrinks towards the first)."""
    return {None: (0, fmt.sign_mask), "+": (0,), "-": (fmt.sign_mask,)}[sign]


def _class_branches(fmt: FloatFormat, name: str, signs: tuple[int, ...]) -> list[st.SearchStrategy[int]]:
    """Reusable strategies for class ``name``: ``sampled_from`` the specials, the TestFloat values; ranges.

    Signs are ORed in before sampling (not ``.map``-ped on after), which keeps
    the values reusable; positive values come first so that shrinking prefers them.
    """
    specials, testfloat, ranges = _class_magnitudes(fmt, name)

    def keep(pattern: int, s: int) -> bool:
        # A magnitude can change class with the sign bit (fnuz: sign | 0 is the NaN, not -0).
        return pattern & fmt.sign_mask == s and _pattern_class(fmt, pattern) == name

    sampled = [[s | m for s in signs for m in listed if keep(s | m, s)] for listed in (specials, testfloat)]
    branches = [st.sampled_from(listed) for listed in sampled if listed]
    branches += [
        st.integers(s | low, s | high)
        for low, high in ranges
        for s in signs
        if keep(s | low, s) and keep(s | high, s)
    ]
    return branches


@functools.lru_cache(maxsize=256)
def _class_magnitudes(fmt: FloatFormat, name: str) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """Magnitudes of class ``name``: a few specials, the other TestFloat values, and ranges.

    The specials get a branch of their own so that each is drawn often.
    """
    ranges: list[tuple[int, int]] = []
    if name == "zero":
        specials = [0]
    elif name == "inf":
        assert fmt.inf is not None
        specials = [fmt.inf]
    elif name == "nan":
        quiet_bit = 1 << (fmt.mantissa_bits - 1)
        specials = (
            [fmt.canonical_nan & fmt.magnitude_mask]  # fnuz: 0, the NaN once the sign bit is set
            if fmt.nan_encoding != "ieee"
            else [fmt.exponent_mask | payload for payload in (quiet_bit, 1, fmt.mantissa_mask, quiet_bit | 1)]
        )
        if fmt.nan_encoding == "ieee":
            ranges = [(fmt.exponent_mask | 1, fmt.exponent_mask | fmt.mantissa_mask)]
    elif name == "subnormal":
        specials = [fmt.min_subnormal, fmt.max_subnormal, 1 << (fmt.mantissa_bits - 1)]
        ranges = [(fmt.min_subnormal, fmt.max_subnormal)]
    else:
        step = 1 << fmt.mantissa_bits  # one binade
        specials = [
            fmt.one,
            fmt.one + step,  # 2.0
            fmt.one - step,  # 0.5
            fmt.one | 1 << (fmt.mantissa_bits - 1),  # 1.5
            fmt.one + 1,
            fmt.one - 1,
            fmt.min_normal,
            fmt.max_finite,
            fmt.min_normal + 1,
            fmt.max_finite - 1,
        ]
        ranges = [(fmt.min_normal, fmt.max_finite)]
    # Pattern-major order: the powers of two first, then the 1.5-like values, ...
    testfloat = [
        case.bits & fmt.magnitude_mask
        for case in testfloat_cases(fmt)
        if case.cls == name and case.sign == "+"
    ]
    testfloat += [  # classes that exist only with the sign bit set (the fnuz NaN)
        case.bits & fmt.magnitude_mask
        for case in testfloat_cases(fmt)
        if case.cls == name and case.sign == "-"
    ]
    # A named value of another class in a narrow format (fp4's "0.5" is subnormal) is dropped later.
    specials = list(dict.fromkeys(specials))
    return specials, [value for value in dict.fromkeys(testfloat) if value not in specials], ranges


@_lazy
def normals_near_one(fmt: object, binades: int = 3, *, sign: str | None = None) -> st.SearchStrategy[int]:
    """Normal patterns of ``fmt`` within ``2**±binades`` of 1, any significand: results stay in range.

    The unbiased exponent E runs over ``[max(-binades, emin), min(binades, emax)]``
    and the significand over every pattern (the format's NaN excluded).  Laws that
    hold away from underflow and overflow (PAM's integer identity, associativity)
    would reject most draws of arbitrary exponents; these keep results normal.

    Parameters
    ----------
    fmt : format
        Anything :func:`revcheck.formats.get` accepts.
    binades : int
        How many binades above and below 1.0 (clamped to the format's normal range).
    sign : {None, "+", "-"}
        None for both signs.

    Raises
    ------
    hypothesis.errors.InvalidArgument
        When drawn from, for an unknown format or sign, or ``binades`` not an int >= 0.

    Notes
    -----
    Shrinks towards +1.0.  Values are reusable, so arrays of them use a fill:
    ``hypothesis.extra.numpy.arrays(fmt.uint_dtype, shape, elements=normals_near_one(fmt))``,
    or :func:`bit_arrays` ``(fmt, shape, elements=normals_near_one(fmt))``; pass
    ``fill=st.nothing()`` to draw every element (the array of independent values
    an ``st.lists`` gives).

    Examples
    --------
    >>> from hypothesis import find
    >>> normals_near_one("fp8_e4m3fn", binades=6)
    normals_near_one(fmt='fp8_e4m3fn', binades=6)
    >>> hex(find(normals_near_one("bf16"), lambda b: True))
    '0x3f80'
    """
    fmt_ = _format(fmt)
    _validate_sign(sign)
    if not isinstance(binades, int) or isinstance(binades, bool) or binades < 0:
        raise InvalidArgument(
            f"binades={binades!r} is not accepted; pass an int >= 0 (the exponent range is "
            f"[-binades, binades], clamped to {fmt_.name}'s [{fmt_.emin}, {fmt_.emax}])"
        )
    lowest = (max(-binades, fmt_.emin) + fmt_.bias) << fmt_.mantissa_bits
    highest = min(
        (min(binades, fmt_.emax) + fmt_.bias) << fmt_.mantissa_bits | fmt_.mantissa_mask, fmt_.max_finite
    )
    signs = _sign_masks(fmt_, sign)
    # [1, top] before [bottom, 1): an integer range shrinks towards its lower end, so this shrinks to 1.0.
    halves = [(fmt_.one, highest), (lowest, fmt_.one - 1)] if lowest < fmt_.one else [(fmt_.one, highest)]
    return st.one_of([st.integers(s | low, s | high) for s in signs for low, high in halves])


# ---- arrays, tensors, devices ----------------------------------------------------------------


@_lazy
def bit_arrays(
    fmt: object,
    shape: int | tuple[int, ...] | st.SearchStrategy[tuple[int, ...]],
    *,
    classes: Iterable[str] | None = None,
    sign: str | None = None,
    elements: st.SearchStrategy[int] | None = None,
    fill: st.SearchStrategy[int] | None = None,
) -> st.SearchStrategy[np.ndarray[Any, Any]]:
    """NumPy arrays of ``fmt.uint_dtype`` holding patterns from :func:`bit_patterns` (or ``elements``).

    Parameters
    ----------
    fmt : format
        Anything :func:`revcheck.formats.get` accepts.
    shape : int, tuple of int, or strategy
        A strategy such as ``hypothesis.extra.numpy.array_shapes()`` draws the shape.
    classes, sign
        As in :func:`bit_patterns`.
    elements : strategy of int, optional
        Patterns to use instead of ``bit_patterns(fmt, classes=classes, sign=sign)``,
        e.g. :func:`normals_near_one` or :func:`testfloat_values`.
    fill : strategy of int, optional
        As in ``hypothesis.extra.numpy.arrays``: None uses ``elements`` as the fill
        when its values are reusable (those of this module are), ``st.nothing()``
        draws every element.

    Raises
    ------
    hypothesis.errors.InvalidArgument
        When drawn from, for a bad shape, format, class or sign, or ``elements``
        together with ``classes``/``sign``.

    Examples
    --------
    >>> bit_arrays("fp16", (2, 3), sign="-")
    bit_arrays(fmt='fp16', shape=(2, 3), sign='-')
    """
    fmt_ = _format(fmt)
    if not isinstance(shape, (int, tuple, st.SearchStrategy)) or isinstance(shape, bool):
        raise InvalidArgument(
            f"shape={shape!r} is a {type(shape).__name__}; pass an int, a tuple of ints, or a strategy "
            "such as hypothesis.extra.numpy.array_shapes()"
        )
    if (isinstance(shape, int) and shape < 0) or (isinstance(shape, tuple) and any(n < 0 for n in shape)):
        raise InvalidArgument(f"shape={shape!r} has a negative size; sizes must be >= 0")
    if elements is None:
        elements = bit_patterns(fmt_, classes=classes, sign=sign)
    elif classes is not None or sign is not None:
        raise InvalidArgument(
            "pass either elements= or classes=/sign=, not both; to restrict elements, build them "
            "with those arguments (bit_patterns(fmt, classes=..., sign=...))"
        )
    return hnp.arrays(fmt_.uint_dtype, shape, elements=elements, fill=fill)


@_lazy
def float_arrays(
    fmt: object,
    shape: int | tuple[int, ...] | st.SearchStrategy[tuple[int, ...]],
    *,
    classes: Iterable[str] | None = None,
    sign: str | None = None,
    elements: st.SearchStrategy[int] | None = None,
    fill: st.SearchStrategy[int] | None = None,
) -> st.SearchStrategy[np.ndarray[Any, Any]]:
    """NumPy float arrays of ``fmt`` -- NumPy's own dtype, or ml_dtypes' -- built from :func:`bit_arrays`.

    The arrays hold exactly the drawn bit patterns (a view, no cast): the way to
    test NumPy/JAX code on bf16, fp8, fp6 and fp4 values without bit-pattern
    plumbing.  For formats NumPy lacks (bf16, fp8, fp6, fp4) the dtype is
    ml_dtypes' (``pip install 'revcheck[ml_dtypes]'``), imported when first drawn from.

    Parameters
    ----------
    fmt, shape, classes, sign, elements, fill
        As in :func:`bit_arrays`.

    Raises
    ------
    hypothesis.errors.InvalidArgument
        When drawn from, as :func:`bit_arrays`, or where no NumPy dtype holds ``fmt``
        (ml_dtypes missing).

    Examples
    --------
    >>> float_arrays("bf16", 3, classes=("normal",))
    float_arrays(fmt='bf16', shape=3, classes=('normal',))
    >>> from hypothesis import find
    >>> find(float_arrays("fp8_e4m3fnuz", 2, classes=("nan",)), lambda a: True).view("uint8").tolist()
    [128, 128]
    """
    fmt_ = _format(fmt)
    try:
        dtype = _bits.numpy_dtype(fmt_)
    except TypeError as error:
        raise InvalidArgument(str(error)) from None
    patterns = bit_arrays(fmt_, shape, classes=classes, sign=sign, elements=elements, fill=fill)
    return patterns.map(lambda array: array.view(dtype))


@_lazy
def tensors(
    fmt: object,
    shape: int | tuple[int, ...] | st.SearchStrategy[tuple[int, ...]],
    *,
    device: str = "cpu",
    classes: Iterable[str] | None = None,
    sign: str | None = None,
) -> st.SearchStrategy[torch.Tensor]:
    """torch tensors of ``fmt``'s dtype on ``device``, built from :func:`bit_arrays` bit for bit.

    For a format torch has no dtype of (fp6, fp4) the tensors are ``uint8`` and
    hold the bit patterns: pass ``fmt=`` with them to revcheck's kernels and
    asserts (docs/spec.md D1.10).

    Parameters
    ----------
    fmt, shape, classes, sign
        As in :func:`bit_arrays`.
    device : str
        A torch device; ``"cuda"`` needs a GPU where the strategy is drawn from.

    Raises
    ------
    hypothesis.errors.InvalidArgument
        When drawn from, for an argument that is not a device (or as :func:`bit_arrays`).
    DeviceUnavailableError
        When drawn from on a machine without ``device``: pytest reports the test
        as skipped, with the reason.  ``@given(x=tensors(..., device="cuda"))``
        therefore imports and collects everywhere; better still, take revcheck's
        ``device`` fixture or draw the device from :func:`devices`.

    Examples
    --------
    >>> tensors("bf16", 4, device="cuda")   # nothing is checked (nor is torch imported) yet
    tensors(fmt='bf16', shape=4, device='cuda')
    """
    import torch

    fmt_ = _format(fmt)
    try:
        torch_device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InvalidArgument(
            f"device={device!r} is not a torch device ({error}); use 'cpu', 'cuda', or draw from devices()"
        ) from None
    reason = _device_unavailable_reason(torch_device)
    if reason is not None:
        raise DeviceUnavailableError(
            f"device={device!r} but {reason}; use device='cpu', draw the device from devices(), or take "
            "the `device` fixture of revcheck's pytest plugin"
        )
    return bit_arrays(fmt_, shape, classes=classes, sign=sign).map(
        lambda pattern: _bits.to_torch(pattern, fmt_, device)
    )


def _device_unavailable_reason(device: torch.device) -> str | None:
    """Why torch cannot use ``device`` here, or None when it can."""
    import torch

    if device.type == "cpu":
        return None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "torch.cuda.is_available() is False"
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            return f"torch sees {count} CUDA device(s)"
        return None
    try:  # any other backend: available iff torch can allocate there
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:
        return f"torch cannot allocate on it ({error})"
    return None


@_lazy
def devices() -> st.SearchStrategy[str]:
    """Device names available here: ``"cpu"``, plus ``"cuda"`` when torch sees a GPU.

    >>> devices()
    devices()
    """
    import torch

    return st.sampled_from(["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])


# ---- TestFloat-style counted cases -----------------------------------------------------------


class CountedCase(NamedTuple):
    """One counted case: its bit pattern and where it came from.

    ``cls`` is the class of ``bits`` (:func:`revcheck.bits.classify`, so never
    wrong: fp8_e4m3fn's NaN S.1111.111 lies in row ``"E=emax"`` and has class
    ``"nan"``), ``sign`` is ``"+"`` or ``"-"``, ``row`` names the exponent
    field and ``pattern`` the significand field.
    """

    bits: int
    cls: str
    sign: str
    row: str
    pattern: str

    @property
    def label(self) -> str:
        """``+normal (row E=0, pattern top bit)``: for draw labels and failure messages."""
        return f"{self.sign}{self.cls} (row {self.row}, pattern {self.pattern})"

    def __repr__(self) -> str:
        return (
            f"CountedCase(bits={self.bits:#x}, cls={self.cls!r}, sign={self.sign!r}, row={self.row!r}, "
            f"pattern={self.pattern!r})"
        )


class CountedCases(Sequence[CountedCase]):
    """A deterministic, indexable product: significand patterns × exponent rows × signs.

    Case ``i`` has pattern ``i // (2 * len(rows))``, row ``(i // 2) % len(rows)``
    and sign ``i % 2`` (+ first): the first cases are ±0, ±1, ±2, ±0.5, ... (every
    row with a zero significand), then every row with the top bit, and so on, so
    that Hypothesis shrinks a draw from :meth:`strategy` towards them.  Nothing is
    materialised: indexing and :meth:`bits` compute the patterns.

    Attributes
    ----------
    fmt : FloatFormat
    rows : tuple of (name, biased exponent field)
    patterns : tuple of (name, significand field)
    """

    def __init__(
        self,
        fmt: FloatFormat,
        rows: Sequence[tuple[str, int]],
        patterns: Sequence[tuple[str, int]],
        description: str,
    ) -> None:
        self.fmt = fmt
        self.rows = tuple(rows)
        self.patterns = tuple(patterns)
        self._description = description

    def __len__(self) -> int:
        return 2 * len(self.rows) * len(self.patterns)

    def __repr__(self) -> str:
        return self._description

    @overload
    def __getitem__(self, index: int) -> CountedCase: ...
    @overload
    def __getitem__(self, index: slice) -> list[CountedCase]: ...
    def __getitem__(self, index: int | slice) -> CountedCase | list[CountedCase]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        position = _check_index(index, len(self), self)
        pattern, row, negative = self._locate(position)
        value = self._sign(negative) | self.rows[row][1] << self.fmt.mantissa_bits | self.patterns[pattern][1]
        cls = str(_bits.classify(np.array([value], dtype=self.fmt.uint_dtype), self.fmt)[0])
        return CountedCase(value, cls, "-" if negative else "+", self.rows[row][0], self.patterns[pattern][0])

    def __iter__(self) -> Iterator[CountedCase]:
        chunk = 4096
        for start in range(0, len(self), chunk):
            stop = min(start + chunk, len(self))
            patterns = self.bits(start, stop)
            classes = _bits.classify(patterns, self.fmt)
            for position, value, cls in zip(range(start, stop), patterns.tolist(), classes, strict=True):
                pattern, row, negative = self._locate(position)
                yield CountedCase(
                    value, str(cls), "-" if negative else "+", self.rows[row][0], self.patterns[pattern][0]
                )

    def bits(self, start: int = 0, stop: int | None = None) -> np.ndarray[Any, Any]:
        """Patterns of cases ``start`` to ``stop`` (default: all), as one ``fmt.uint_dtype`` array.

        Feed it to an oracle and a kernel at once; chunk a big sequence with ``start``/``stop``.
        """
        start, stop, _ = slice(start, stop).indices(len(self))
        index = np.arange(start, max(start, stop), dtype=np.int64)
        per_pattern = 2 * len(self.rows)
        fields = np.array([field for _, field in self.rows], dtype=np.uint64)
        significands = np.array([value for _, value in self.patterns], dtype=np.uint64)
        signs = np.array([0, self.fmt.sign_mask], dtype=np.uint64)
        patterns = (
            signs[index % 2]
            | fields[(index // 2) % len(self.rows)] << np.uint64(self.fmt.mantissa_bits)
            | significands[index // per_pattern]
        )
        return patterns.astype(self.fmt.uint_dtype)

    def strategy(self) -> st.SearchStrategy[CountedCase]:
        """Draw cases (labelled :class:`CountedCase` values); shrinks towards the first ones.

        For bare patterns (e.g. as array elements) use :func:`testfloat_values`.
        """
        return st.sampled_from(range(len(self))).map(self.__getitem__)

    def _locate(self, position: int) -> tuple[int, int, int]:
        return position // (2 * len(self.rows)), (position // 2) % len(self.rows), position % 2

    def _sign(self, negative: int) -> int:
        return self.fmt.sign_mask if negative else 0


class CountedPairs(Sequence[tuple[CountedCase, CountedCase]]):
    """Every pair ``(a, b)`` of two :class:`CountedCases`, ``a`` major: ``(first[i // n], second[i % n])``.

    Attributes
    ----------
    first, second : CountedCases
        The operands' cases (``len(self) == len(first) * len(second)``).
    """

    def __init__(self, first: CountedCases, second: CountedCases, description: str) -> None:
        self.first = first
        self.second = second
        self._description = description

    def __len__(self) -> int:
        return len(self.first) * len(self.second)

    def __repr__(self) -> str:
        return self._description

    @overload
    def __getitem__(self, index: int) -> tuple[CountedCase, CountedCase]: ...
    @overload
    def __getitem__(self, index: slice) -> list[tuple[CountedCase, CountedCase]]: ...
    def __getitem__(
        self, index: int | slice
    ) -> tuple[CountedCase, CountedCase] | list[tuple[CountedCase, CountedCase]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        position = _check_index(index, len(self), self)
        return self.first[position // len(self.second)], self.second[position % len(self.second)]

    def __iter__(self) -> Iterator[tuple[CountedCase, CountedCase]]:
        seconds = list(self.second)
        for a in self.first:
            for b in seconds:
                yield a, b

    def bits(
        self, start: int = 0, stop: int | None = None
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """Operand patterns ``(a, b)`` of pairs ``start`` to ``stop`` (default: all), as two arrays."""
        start, stop, _ = slice(start, stop).indices(len(self))
        index = np.arange(start, max(start, stop), dtype=np.int64)
        n = len(self.second)
        return self.first.bits()[index // n], self.second.bits()[index % n]

    def strategy(self) -> st.SearchStrategy[tuple[CountedCase, CountedCase]]:
        """Draw pairs; each operand shrinks on its own towards its first cases."""
        return st.tuples(self.first.strategy(), self.second.strategy())


def _check_index(index: int, length: int, owner: object) -> int:
    if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
        raise TypeError(f"{owner!r} is indexed by ints or slices, not {type(index).__name__}")
    position = int(index) + length if index < 0 else int(index)
    if not 0 <= position < length:
        raise IndexError(f"index {index} is out of range for {owner!r}, which has {length} cases")
    return position


def testfloat_cases(fmt: object, level: int = 1) -> CountedCases:
    """TestFloat-style counted cases of ``fmt``: exponent rows × significand patterns × both signs.

    A deterministic sequence of known length (``len()``), in a fixed order
    (:class:`CountedCases`), as Berkeley TestFloat's case levels; everything is
    derived from the format's fields.

    Rows (the exponent field), in this order:

    - ``subnormal``: field 0, giving ±0 and the subnormals (smallest: pattern
      ``bottom bit``; largest: ``all ones``; every binade in between: the
      walking ones, exponents emin - 1 down to emin - p + 1);
    - normal rows ``E=0``, ``E=1``, ``E=-1``, ``E=emin``, ``E=emin+1``, ``E=-p``,
      ``E=-(p+1)``, ``E=p``, ``E=p+1``, ``E=emax-1``, ``E=emax`` (p is the
      precision, ``fmt.precision``).  A row that falls outside [emin, emax] is
      left out; rows on the same exponent are listed once, under every name
      (``E=emin+1=-(p+1)`` in fp8_e4m3fn).  ±p and ±(p+1) are where integers stop
      being exact and where sums lose every bit of the smaller operand; paired
      with ``E=emin`` and ``E=emin+1`` they give products exponents emin - p and
      emin - p - 1, which straddle the underflow edge; ``E=emax`` with
      ``all ones`` (or fn formats' ``all ones but bottom bit``) is the largest
      finite value, next to overflow;
    - ``inf/nan``: the all-ones field where the format has infinity (pattern
      ``zero`` is ±inf, every other a NaN).  Formats without infinity have no
      such row: the fn formats' only NaN, S.1111.111, is ``E=emax`` with ``all
      ones`` (class ``"nan"``); the fnuz formats' only NaN, the pattern of −0,
      is row ``subnormal`` with pattern ``zero`` and sign ``-``; fp6 and fp4
      have none.

    Patterns (the significand field, :func:`significand_patterns` order): zero,
    all ones, walking ones (each single bit, ``top bit`` to ``bottom bit``),
    walking zeros, runs of ones from the top and from the bottom, then
    alternating bits and the top and bottom bits together; a pattern reached
    twice is listed once.

    Parameters
    ----------
    fmt : format
        Anything :func:`revcheck.formats.get` accepts.
    level : {1, 2}
        1: the rows above.  2: every exponent field (all binades, field 0 to
        the all-ones field: the named rows first, then the others as ``E=e``),
        same patterns; a superset of level 1, exhaustive for the 8-bit formats.

    Returns
    -------
    CountedCases
        Index it, iterate it, take every pattern at once (``.bits()``), or draw
        from it (``.strategy()`` for labelled cases, :func:`testfloat_values`
        for bare patterns).

    Raises
    ------
    hypothesis.errors.InvalidArgument
        For an unknown format or level (at once: this is not a strategy).

    Examples
    --------
    Counts per format (the cases, and the pairs of :func:`testfloat_pairs`):

    >>> from revcheck import formats
    >>> for name in formats.names():
    ...     counts = [len(testfloat_cases(name, level)) for level in (1, 2)]
    ...     counts += [len(testfloat_pairs(name, level)) for level in (1, 2)]
    ...     print(f"{name:10}", *[f"{count:>10,}" for count in counts])
    fp64            5,382    847,872     16,900 28,965,924
    fp32            2,366     46,592     16,900  5,597,956
    fp16            1,014      2,496     16,900  1,028,196
    bf16              702     13,824     16,900    492,804
    fp8_e5m2          104        256     10,816     10,816
    fp8_e4m3fn        176        256     12,100     30,976
    fp8_e5m2fnuz       96        256      9,216      9,216
    fp8_e4m3fnuz      192        256     14,400     36,864
    fp6_e3m2fn         56         64      3,136      3,136
    fp6_e2m3fn         64         64      1,600      4,096
    fp4_e2m1fn         16         16        256        256
    >>> cases = testfloat_cases("bf16")
    >>> cases
    testfloat_cases('bf16', level=1)
    >>> [hex(case.bits) for case in cases[:4]]
    ['0x0', '0x8000', '0x3f80', '0xbf80']
    >>> cases[2].label
    '+normal (row E=0, pattern zero)'
    >>> sorted({case.cls for case in testfloat_cases("fp8_e4m3fn")})
    ['nan', 'normal', 'subnormal', 'zero']
    """
    fmt_ = _format(fmt)
    _validate_level(level)
    return _testfloat_cases(fmt_, level)


@functools.lru_cache(maxsize=64)
def _testfloat_cases(fmt: FloatFormat, level: int) -> CountedCases:
    rows = _testfloat_rows(fmt, every_field=level == 2)
    description = f"testfloat_cases({fmt.name!r}, level={level})"
    return CountedCases(fmt, rows, _named_significands(fmt.mantissa_bits), description)


def _testfloat_rows(fmt: FloatFormat, *, every_field: bool) -> list[tuple[str, int]]:
    """(name, biased exponent field) of the TestFloat rows of ``fmt``."""
    p = fmt.precision
    named_exponents = [
        ("0", 0),
        ("1", 1),
        ("-1", -1),
        ("emin", fmt.emin),
        ("emin+1", fmt.emin + 1),
        ("-p", -p),
        ("-(p+1)", -(p + 1)),
        ("p", p),
        ("p+1", p + 1),
        ("emax-1", fmt.emax - 1),
        ("emax", fmt.emax),
    ]
    names_by_field: dict[int, list[str]] = {}
    for name, exponent in named_exponents:
        if fmt.emin <= exponent <= fmt.emax:
            names_by_field.setdefault(exponent + fmt.bias, []).append(name)
    rows = [("subnormal", 0)] + [("E=" + "=".join(names), field) for field, names in names_by_field.items()]
    if every_field:
        rows += [(f"E={field - fmt.bias}", field) for field in range(1, fmt.emax + fmt.bias + 1)]
    if fmt.has_inf:
        rows.append(("inf/nan", fmt.max_biased_exponent))
    first_row: dict[int, str] = {}
    for name, field in rows:  # level 2 lists every field; a named row keeps its name
        first_row.setdefault(field, name)
    return [(name, field) for field, name in first_row.items()]


def testfloat_pairs(fmt: object, level: int = 1) -> CountedPairs:
    """TestFloat-style counted operand pairs of ``fmt``, for binary operations.

    level 1
        Every pair of the *corner* cases: the level-1 rows of
        :func:`testfloat_cases` with the patterns ``zero``, ``all ones``,
        ``top bit``, ``bottom bit`` and ``all ones but bottom bit`` (TestFloat's
        level-1 significands, plus the top bit: 1.5 ⊡ 1.5 is PAM's worst case),
        both signs: 16,900 pairs for a format with 13 rows (fp64, fp32, fp16, bf16).
    level 2
        Every pair of the level-1 :func:`testfloat_cases` (millions for the wide
        formats: enumerate them in chunks with ``.bits(start, stop)``).

    The counts per format are in :func:`testfloat_cases`' example.  Pair ``i``
    is ``(first[i // n], second[i % n])``; ``.strategy()`` draws pairs whose
    operands shrink independently.

    Raises
    ------
    hypothesis.errors.InvalidArgument
        For an unknown format or level.

    Examples
    --------
    >>> pairs = testfloat_pairs("fp16")
    >>> pairs, len(pairs)
    (testfloat_pairs('fp16', level=1), 16900)
    >>> a, b = pairs.bits()
    >>> a.dtype, a.shape
    (dtype('uint16'), (16900,))
    >>> [case.label for case in pairs[314]]
    ['+normal (row E=0, pattern zero)', '+normal (row E=0, pattern top bit)']
    """
    fmt_ = _format(fmt)
    _validate_level(level)
    return _testfloat_pairs(fmt_, level)


@functools.lru_cache(maxsize=64)
def _testfloat_pairs(fmt: FloatFormat, level: int) -> CountedPairs:
    description = f"testfloat_pairs({fmt.name!r}, level={level})"
    if level == 2:
        cases = _testfloat_cases(fmt, 1)
    else:
        corners = {"zero", "all ones", "top bit", "bottom bit", "all ones but bottom bit"}
        cases = CountedCases(
            fmt,
            _testfloat_rows(fmt, every_field=False),
            [(name, value) for name, value in _named_significands(fmt.mantissa_bits) if name in corners],
            f"{description}.first",
        )
    return CountedPairs(cases, cases, description)


@_lazy
def testfloat_values(fmt: object, level: int = 1) -> st.SearchStrategy[int]:
    """The patterns of :func:`testfloat_cases` ``(fmt, level)``, drawn; shrinks towards the first (+0).

    Reusable values (a ``sampled_from`` of ints), so they fill arrays:
    ``bit_arrays(fmt, shape, elements=testfloat_values(fmt))``.  Mix them into
    random draws with ``st.one_of(testfloat_values(fmt), bit_patterns(fmt))``; for
    labelled cases draw ``testfloat_cases(fmt).strategy()`` instead.  Level 2
    materialises every pattern when first drawn from (848k ints for fp64).

    Raises
    ------
    hypothesis.errors.InvalidArgument
        When drawn from, for an unknown format or level.

    Examples
    --------
    >>> from hypothesis import find
    >>> testfloat_values("fp8_e5m2")
    testfloat_values(fmt='fp8_e5m2')
    >>> find(testfloat_values("fp8_e5m2"), lambda b: b > 0x80)
    188
    """
    fmt_ = _format(fmt)
    _validate_level(level)
    return st.sampled_from(_testfloat_cases(fmt_, level).bits().tolist())


# Their names start with "test": a test module that imports them must not have pytest collect them.
testfloat_cases.__test__ = False  # type: ignore[attr-defined]
testfloat_pairs.__test__ = False  # type: ignore[attr-defined]
testfloat_values.__test__ = False  # type: ignore[attr-defined]


# ---- argument checking -----------------------------------------------------------------------


def _format(fmt: object) -> FloatFormat:
    try:
        return _formats.get(fmt)
    except _formats.UnsupportedFormatError as error:
        raise InvalidArgument(str(error)) from None


def _validate_level(level: object) -> None:
    if level not in TESTFLOAT_LEVELS or isinstance(level, bool):
        raise InvalidArgument(
            f"level={level!r} is not a TestFloat level here; use 1 (the named exponent rows) or 2 (every "
            "exponent field; pairs: every pair of level-1 cases)"
        )


def _validate_classes(
    fmt: FloatFormat, classes: Iterable[str] | None, sign: str | None = None
) -> tuple[str, ...]:
    available = format_classes(fmt, sign)
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
        signed = "" if sign is None else f" {sign}"
        raise InvalidArgument(
            f"{fmt.name} has no{signed} {' or '.join(missing)} values ({_MISSING_WHY[fmt.nan_encoding]}); "
            f"use some of {available!r}"
        )
    return tuple(dict.fromkeys(chosen))


# Why a format lacks some class (or some signed class), by its special-value encoding.
_MISSING_WHY = {
    "ieee": "every format has both signs of every class but NaN's",
    "fn": "it saturates instead of overflowing to infinity",
    "fnuz": "no infinity, no -0: its one NaN is the pattern of -0, 0x80",
    "none": "no infinity and no NaN: every pattern is a number",
}


def _validate_sign(sign: object) -> None:
    if sign not in SIGNS:
        raise InvalidArgument(f"sign={sign!r} is not accepted; use None (both signs), '+' or '-'")
