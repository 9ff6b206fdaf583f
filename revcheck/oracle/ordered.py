"""Declared-order float arithmetic for the level-O oracles (docs/spec.md §0), pure NumPy.

The model oracles (function-preserving expansions, Transformer-XL, ...) compute
in IEEE binary32 / binary64 with two rules that make every result a function
of the inputs alone, portable across machines:

* **Reductions run in a declared order.**  :func:`matmul` and :func:`sequential_sum` are
  sequential: ``acc = +0.0``, then ``acc = fl(acc + fl(a_k * b_k))`` (or
  ``fl(acc + x_k)``) for ``k = 0 .. K-1``, each step rounded to nearest even, no
  fused multiply-add (each step is a separate NumPy ufunc call, so nothing can
  contract).  Appending zero terms at the end of a reduction is then bit-neutral
  for finite data (``fl(acc + (+0)) == acc`` unless ``acc`` is ``-0``, and the
  accumulator starts at ``+0``), which is what growth transformations rely on.
* **Elementwise functions are independent of an element's position.**  The
  basic operations (``+ - * /``, :func:`numpy.sqrt`) are correctly rounded by
  IEEE 754, so vectorised or scalar, every element gets the same bits.  The
  transcendental functions are *not* taken from NumPy, whose SIMD and scalar
  loops may differ by an ulp (and differ between machines): :func:`exp` is
  built here from correctly rounded basic operations only (Cody-Waite range
  reduction, a fixed polynomial, an exact ``ldexp``), so its bits depend on the
  value alone.  Its accuracy is a few binary64 ulps; binary32 results are the
  binary64 result rounded once more.  :func:`expm1`, :func:`tanh` and :func:`erf`
  (and the GELUs built on them) are made the same way: a fixed sequence of
  correctly rounded operations per element, chosen by the element's value only
  (``np.where`` on the value, never on its index), with constants that are data.
* **Narrow storage formats are rounded through bit patterns.**  NumPy has no
  bf16: :func:`round_to_storage` rounds binary32 values once (to nearest even,
  on their bit patterns, with :mod:`revcheck.oracle.rounding`) to bf16 or fp16
  and returns them as binary32 again, which holds them exactly.  A model oracle
  computing "in bf16" computes in binary32 and rounds at its declared storage
  points (docs/spec.md §0; docs/spec.md §4 says which points).

Inputs must already be arrays of the compute dtype (``float32`` or ``float64``);
nothing is silently converted.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "COMPUTE_DTYPES",
    "STORAGE_FORMATS",
    "TRIG_MAX_ARGUMENT",
    "check_compute_array",
    "cos",
    "erf",
    "exp",
    "expm1",
    "gelu",
    "gelu_tanh",
    "layer_norm",
    "matmul",
    "relu",
    "round_to_storage",
    "sequential_sum",
    "sin",
    "softmax",
    "sqrt",
    "tanh",
]

COMPUTE_DTYPES: tuple[np.dtype[Any], ...] = (np.dtype(np.float32), np.dtype(np.float64))

FloatArray = npt.NDArray[np.floating[Any]]


def check_compute_array(x: object, name: str = "x") -> FloatArray:
    """``x`` as an ndarray of a compute dtype; anything else raises ``TypeError`` saying what to pass."""
    if not isinstance(x, np.ndarray) or x.dtype not in COMPUTE_DTYPES:
        got = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
        raise TypeError(
            f"{name} must be a numpy float32 or float64 array, got {got}; "
            "convert it explicitly (the oracle never converts silently)"
        )
    return x


def matmul(a: object, b: object) -> FloatArray:
    """``a @ b`` with sequential accumulation over the reduced dimension (broadcast batch dims).

    ``acc = +0.0; acc = fl(acc + fl(a[..., i, k] * b[..., k, j]))`` for k in order.

    Examples
    --------
    >>> a = np.float32([[1e8, 1.0, -1e8]]); b = np.float32([[1.0], [1.0], [1.0]])
    >>> matmul(a, b)          # (1e8 + 1) rounds to 1e8, then - 1e8: the order is visible
    array([[0.]], dtype=float32)
    """
    a = check_compute_array(a, "a")
    b = check_compute_array(b, "b")
    if a.dtype != b.dtype:
        raise TypeError(f"a and b must have one dtype, got {a.dtype} and {b.dtype}")
    if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
        raise ValueError(f"cannot multiply shapes {a.shape} and {b.shape}: need (..., M, K) @ (..., K, N)")
    shape = (*np.broadcast_shapes(a.shape[:-2], b.shape[:-2]), a.shape[-2], b.shape[-1])
    acc = np.zeros(shape, dtype=a.dtype)
    for k in range(a.shape[-1]):
        product = a[..., :, k, None] * b[..., None, k, :]
        acc = acc + product
    return acc


def sequential_sum(x: object, axis: int = -1) -> FloatArray:
    """Sequential sum along ``axis``: ``acc = +0.0; acc = fl(acc + x_k)`` in index order.

    Examples
    --------
    >>> sequential_sum(np.float32([1e8, 1.0, -1e8, 1.0]))
    np.float32(1.0)
    """
    x = check_compute_array(x)
    moved = np.moveaxis(x, axis, -1)
    acc = np.zeros(moved.shape[:-1], dtype=x.dtype)
    for k in range(moved.shape[-1]):
        acc = acc + moved[..., k]
    return acc


def sqrt(x: object) -> FloatArray:
    """Correctly rounded square root (IEEE 754), hence position-independent."""
    return np.sqrt(check_compute_array(x))


# Cody-Waite split of ln 2 (fdlibm): LN2_HI has 32 trailing zero bits, so k * LN2_HI is exact
# for |k| < 2**20, and the reduced argument r = (x - k*LN2_HI) - k*LN2_LO carries ~2**-80 error.
_LN2_HI = float.fromhex("0x1.62e42fee00000p-1")
_LN2_LO = float.fromhex("0x1.a39ef35793c76p-33")
_INV_LN2 = float.fromhex("0x1.71547652b82fep+0")
# exp(r) for |r| <= ln2/2 by Taylor to degree 13: truncation < 0.35**14/14! < 5e-18 (relative).
_TAYLOR = [1.0 / float(np.prod(np.arange(1, n + 1, dtype=np.float64))) for n in range(13, -1, -1)]
_OVERFLOW = float.fromhex("0x1.62e42fefa39efp+9")  # largest x with exp(x) finite in binary64
_UNDERFLOW = -745.2  # exp(x) < 2**-1075 (rounds to +0) below this


def _exp64(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    finite = np.isfinite(x) & (x <= _OVERFLOW) & (x >= _UNDERFLOW)
    safe = np.where(finite, x, 0.0)
    k = np.rint(safe * _INV_LN2)
    r = (safe - k * _LN2_HI) - k * _LN2_LO
    p = np.full_like(r, _TAYLOR[0])
    for coefficient in _TAYLOR[1:]:
        p = p * r + coefficient
    # ldexp is exact for normal results and correctly rounded for subnormal ones (k reaches 1024
    # only near _OVERFLOW, where p < 1 keeps p * 2**k finite).
    result = np.ldexp(p, k.astype(np.int64))
    result = np.where(finite, result, 0.0)
    result = np.where(x > _OVERFLOW, np.inf, result)
    return np.where(np.isnan(x), np.nan, result)


def exp(x: object) -> FloatArray:
    """``e**x``, position-independent and portable: built from correctly rounded basic operations.

    binary64: a few ulps of error (Taylor of degree 13 after Cody-Waite reduction);
    binary32: the binary64 result rounded to binary32.  ``exp(-inf) = +0``,
    ``exp(+inf) = +inf``, NaN in gives NaN.

    Examples
    --------
    >>> exp(np.float64([0.0, 1.0, -np.inf]))
    array([1.        , 2.71828183, 0.        ])
    """
    x = check_compute_array(x)
    if x.dtype == np.float64:
        return _exp64(x.astype(np.float64, copy=False))
    with np.errstate(over="ignore"):  # binary64 results beyond binary32's range round to inf
        return _exp64(x.astype(np.float64)).astype(x.dtype)


def softmax(x: object, axis: int = -1) -> FloatArray:
    """Softmax along ``axis`` in a declared order: ``e = exp(x - max)``, ``s`` = sequential sum, ``e / s``.

    A row that is all ``-inf`` (fully masked) gives NaN, as in real numbers (0/0).
    """
    x = check_compute_array(x)
    moved = np.moveaxis(x, axis, -1)
    with np.errstate(invalid="ignore"):
        shifted = moved - moved.max(axis=-1, keepdims=True)
        e = exp(shifted)
        s = sequential_sum(e, axis=-1)
        result = e / s[..., None]
    return np.moveaxis(result, -1, axis)


# ---- expm1 and tanh ----------------------------------------------------------------------------------

# expm1(r) - r for |r| <= ln2/2 as r**2 * (1/2! + r/3! + ...), degree 16: truncation < 0.35**17/17! < 2e-22.
_EXPM1_TAYLOR = [1.0 / float(np.prod(np.arange(1, n + 1, dtype=np.float64))) for n in range(17, 1, -1)]
_EXPM1_NEGATIVE_SATURATION = -40.0  # expm1(x) rounds to -1 in binary64 below -37.5
_TANH_SATURATION = 20.0  # tanh(x) rounds to 1 in binary64 above 19.06


def _expm1_small(r: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``e**r - 1`` for ``|r| <= ln2/2``: ``r + r*r*q(r)``, relative error below 2 ulps."""
    q = np.full_like(r, _EXPM1_TAYLOR[0])
    for coefficient in _EXPM1_TAYLOR[1:]:
        q = q * r + coefficient
    return r + (r * r) * q


def _expm1_64(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    finite = np.isfinite(x) & (x <= _OVERFLOW) & (x >= _EXPM1_NEGATIVE_SATURATION)
    safe = np.where(finite, x, 0.0)
    k = np.rint(safe * _INV_LN2)
    r = (safe - k * _LN2_HI) - k * _LN2_LO
    q = _expm1_small(r)
    # e**x - 1 = 2**k (1 + q) - 1 = 2**k q + (2**k - 1); 2**k - 1 is exact for the k used here.
    ki = k.astype(np.int64)
    with np.errstate(over="ignore"):
        result = np.where(ki == 0, q, np.ldexp(q, ki) + (np.ldexp(1.0, ki) - 1.0))
    result = np.where(finite, result, 0.0)
    result = np.where(x > _OVERFLOW, np.inf, result)
    result = np.where(x < _EXPM1_NEGATIVE_SATURATION, -1.0, result)
    result = np.where(x == 0, x, result)  # expm1(±0) = ±0
    return np.where(np.isnan(x), np.nan, result)


def _float64_of(x: FloatArray) -> npt.NDArray[np.float64]:
    return x.astype(np.float64, copy=False)  # exact for binary32 input


def _like(x: FloatArray, result: npt.NDArray[np.float64]) -> FloatArray:
    if x.dtype == np.float64:
        return result
    with np.errstate(over="ignore"):
        return result.astype(x.dtype)


def expm1(x: object) -> FloatArray:
    """``e**x - 1``, accurate near 0, position-independent (same construction as :func:`exp`).

    binary64: a few ulps; binary32: the binary64 result rounded once more.

    Examples
    --------
    >>> expm1(np.float64([1e-20, 0.0, -np.inf]))
    array([ 1.e-20,  0.e+00, -1.e+00])
    """
    x = check_compute_array(x)
    return _like(x, _expm1_64(_float64_of(x)))


def _tanh64(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    magnitude = np.abs(x)
    saturated = magnitude > _TANH_SATURATION
    t = _expm1_64(np.where(saturated, 0.0, 2.0 * magnitude))  # 2|x| is exact
    result = np.where(saturated, 1.0, t / (t + 2.0))  # tanh|x| = (e**2|x| - 1) / (e**2|x| + 1)
    return np.where(np.isnan(x), np.nan, np.copysign(result, x))


def tanh(x: object) -> FloatArray:
    """Hyperbolic tangent from :func:`expm1`: ``tanh|x| = t / (t + 2)``, ``t = expm1(2|x|)``; odd.

    binary64: a few ulps; binary32: rounded once more.  ``tanh(±0) = ±0``, ``tanh(±inf) = ±1``.

    Examples
    --------
    >>> tanh(np.float64([-np.inf, -0.0, 0.5]))
    array([-1.        , -0.        ,  0.46211716])
    """
    x = check_compute_array(x)
    return _like(x, _tanh64(_float64_of(x)))


# ---- erf -----------------------------------------------------------------------------------------------

# (erf(c), erf'(c) = 2/sqrt(pi) e**-c**2) at the centres c = j/8, j = 0..48, each correctly rounded to
# binary64 (generated with mpmath at 300 bits; tests/test_oracle_ordered.py regenerates and compares).
_ERF_CENTRES = (
    ("0x0.0p+0", "0x1.20dd750429b6dp+0"),  # 0/8
    ("0x1.1f5e1a35c3b89p-3", "0x1.1c62fa1e869b6p+0"),  # 1/8
    ("0x1.1af54e232d609p-2", "0x1.0f5d1602f7e41p+0"),  # 2/8
    ("0x1.9dd0d2b721f39p-2", "0x1.f5f0cdaf15313p-1"),  # 3/8
    ("0x1.0a7ef5c18edd2p-1", "0x1.c1efca49a5011p-1"),  # 4/8
    ("0x1.3f196dcd0f135p-1", "0x1.86e9694134b9ep-1"),  # 5/8
    ("0x1.6c1c9759d0e5fp-1", "0x1.492e42d78d2c5p-1"),  # 6/8
    ("0x1.91724951b8fc6p-1", "0x1.0cab61f084b93p-1"),  # 7/8
    ("0x1.af767a741088bp-1", "0x1.a911f096fbc26p-2"),  # 8/8
    ("0x1.c6dad2829ec62p-1", "0x1.45e99bcbb7915p-2"),  # 9/8
    ("0x1.d8865d98abe01p-1", "0x1.e4652fadcb6b2p-3"),  # 10/8
    ("0x1.e5768c3b4a3fcp-1", "0x1.5ce595c455b0ap-3"),  # 11/8
    ("0x1.eea5557137ae0p-1", "0x1.e723726b824a9p-4"),  # 12/8
    ("0x1.f4f693b67bd77p-1", "0x1.499d478bca735p-4"),  # 13/8
    ("0x1.f92d077f8d56dp-1", "0x1.b055303221015p-5"),  # 14/8
    ("0x1.fbe61eef4cf6ap-1", "0x1.12ceb37ff9bc3p-5"),  # 15/8
    ("0x1.fd9ae142795e3p-1", "0x1.529b9e8cf9a1ep-6"),  # 16/8
    ("0x1.fea4218d6594ap-1", "0x1.94624e78e0fafp-7"),  # 17/8
    ("0x1.ff404760319b4p-1", "0x1.d4143a9dfe965p-8"),  # 18/8
    ("0x1.ff9960f3eb327p-1", "0x1.06918b6355624p-8"),  # 19/8
    ("0x1.ffcaa8f4c9beap-1", "0x1.1d83170fbf6fbp-9"),  # 20/8
    ("0x1.ffe514bbdc197p-1", "0x1.2ce898809244ep-10"),  # 21/8
    ("0x1.fff2cfb0453d9p-1", "0x1.3360ccd23db3ap-11"),  # 22/8
    ("0x1.fff9ba420e834p-1", "0x1.30538fbb77ecdp-12"),  # 23/8
    ("0x1.fffd1ac4135f9p-1", "0x1.2408e9ba3327fp-13"),  # 24/8
    ("0x1.fffeb3ebb267bp-1", "0x1.0f9e1b4dd36dfp-14"),  # 25/8
    ("0x1.ffff6f9f67e55p-1", "0x1.e9b5e8d00ce77p-16"),  # 26/8
    ("0x1.ffffc316d9ed0p-1", "0x1.abe09e9144b5ep-17"),  # 27/8
    ("0x1.ffffe710d565ep-1", "0x1.6a597219a93dap-18"),  # 28/8
    ("0x1.fffff618c3da6p-1", "0x1.296a70f414053p-19"),  # 29/8
    ("0x1.fffffc2f171e3p-1", "0x1.d9371e2ff7c35p-21"),  # 30/8
    ("0x1.fffffe92ced93p-1", "0x1.6ce1aa3fd7bddp-22"),  # 31/8
    ("0x1.ffffff7b91176p-1", "0x1.10b1488aeb235p-23"),  # 32/8
    ("0x1.ffffffd169d0cp-1", "0x1.8b0cfce0579e0p-25"),  # 33/8
    ("0x1.fffffff01a8b6p-1", "0x1.155a09065d4f7p-26"),  # 34/8
    ("0x1.fffffffabd229p-1", "0x1.7974e743dea3dp-28"),  # 35/8
    ("0x1.fffffffe4fa30p-1", "0x1.f1e3523b41d7dp-30"),  # 36/8
    ("0x1.ffffffff79626p-1", "0x1.3e44e45301b92p-31"),  # 37/8
    ("0x1.ffffffffd759dp-1", "0x1.8a61745ec7d1dp-33"),  # 38/8
    ("0x1.fffffffff4188p-1", "0x1.d9a880f306bd8p-35"),  # 39/8
    ("0x1.fffffffffc9e8p-1", "0x1.13af4f04f9998p-36"),  # 40/8
    ("0x1.ffffffffff11ap-1", "0x1.370ab8327af5ep-38"),  # 41/8
    ("0x1.ffffffffffc05p-1", "0x1.5422ef5d8949dp-40"),  # 42/8
    ("0x1.ffffffffffef8p-1", "0x1.68823e52970bep-42"),  # 43/8
    ("0x1.fffffffffffbep-1", "0x1.7258610b3b233p-44"),  # 44/8
    ("0x1.ffffffffffff0p-1", "0x1.70beaf9c7ffb6p-46"),  # 45/8
    ("0x1.ffffffffffffcp-1", "0x1.63daf8b4b1e0cp-48"),  # 46/8
    ("0x1.fffffffffffffp-1", "0x1.4cd9c04158cd7p-50"),  # 47/8
    ("0x1.0000000000000p+0", "0x1.2dc119095729fp-52"),  # 48/8
)
_ERF_STEP = 8.0  # centres per unit
_ERF_DEGREE = 15  # |x - c| <= 1/16: the first omitted term is below 2**-70 relative
_ERF_SATURATION = 6.0625  # beyond the last centre's interval erf(x) rounds to 1 in binary64 (from 5.93 on)


def _erf_coefficients() -> npt.NDArray[np.float64]:
    """Taylor coefficients of erf about every centre, shape (degree + 1, centres).

    ``b_n`` are the Taylor coefficients of ``erf'`` (``y' = -2 x y`` gives
    ``(n+1) b_{n+1} = -2 c b_n - 2 b_{n-1}``) and ``a_{n+1} = b_n / (n+1)``.  Only
    ``a_0`` and ``b_0`` need full accuracy (they are the table); the rest are
    multiplied by ``|x - c|**n <= 16**-n``.
    """
    a0 = np.array([float.fromhex(a) for a, _ in _ERF_CENTRES])
    b = [np.array([float.fromhex(b) for _, b in _ERF_CENTRES])]
    c = np.arange(len(_ERF_CENTRES), dtype=np.float64) / _ERF_STEP
    b.append(-2.0 * c * b[0])
    for n in range(1, _ERF_DEGREE - 1):
        b.append((-2.0 * c * b[n] - 2.0 * b[n - 1]) / (n + 1))
    return np.array([a0] + [b[n] / (n + 1) for n in range(_ERF_DEGREE)])


_ERF_COEFFICIENTS = _erf_coefficients()


def _erf64(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    magnitude = np.abs(x)
    saturated = ~(magnitude <= _ERF_SATURATION)  # also NaN; fixed below
    safe = np.where(saturated, 0.0, magnitude)
    j = np.rint(safe * _ERF_STEP).astype(np.int64)
    d = safe - j / _ERF_STEP  # exact: Sterbenz (j >= 1) or d = |x| (j = 0)
    coefficients = _ERF_COEFFICIENTS[:, j]
    p = coefficients[-1]
    for n in range(_ERF_DEGREE - 1, -1, -1):
        p = p * d + coefficients[n]
    result = np.where(saturated, 1.0, p)
    return np.where(np.isnan(x), np.nan, np.copysign(result, x))


def erf(x: object) -> FloatArray:
    """Error function, position-independent: a Taylor polynomial about the nearest of 49 centres j/8.

    binary64: about one ulp (tests measure it against mpmath); binary32: the
    binary64 result rounded once more.  Odd: ``erf(-0) = -0``; ``erf(±inf) = ±1``.

    Examples
    --------
    >>> erf(np.float64([-np.inf, 0.0, 0.5]))
    array([-1.        ,  0.        ,  0.52049988])
    """
    x = check_compute_array(x)
    return _like(x, _erf64(_float64_of(x)))


# ---- GELU -------------------------------------------------------------------------------------------

_SQRT1_2 = float.fromhex("0x1.6a09e667f3bcdp-1")  # M_SQRT1_2, correctly rounded
_GELU_TANH_BETA = float.fromhex("0x1.9884533d43651p-1")  # sqrt(2/pi) as torch's M_SQRT2 * M_2_SQRTPI * 0.5
_GELU_TANH_KAPPA = 0.044715


def gelu(x: object) -> FloatArray:
    """GELU with erf, in torch's declared order: ``(x * 0.5) * (1 + erf(x * fl(1/sqrt 2)))``.

    Every operation is rounded in ``x``'s dtype (erf as :func:`erf`), so the
    result is a function of the value alone.

    Examples
    --------
    >>> gelu(np.float32([-1.0, 0.0, 1.0]))
    array([-0.15865526,  0.        ,  0.8413447 ], dtype=float32)
    """
    x = check_compute_array(x)
    dtype = x.dtype.type
    return (x * dtype(0.5)) * (dtype(1.0) + erf(x * dtype(_SQRT1_2)))


def gelu_tanh(x: object) -> FloatArray:
    """GELU, tanh approximation, torch's order: ``(0.5 * x) * (1 + tanh(beta * (x + kappa * (x*x*x))))``.

    Examples
    --------
    >>> gelu_tanh(np.float64([1.0]))
    array([0.84119199])
    """
    x = check_compute_array(x)
    dtype = x.dtype.type
    cube = (x * x) * x
    inner = dtype(_GELU_TANH_BETA) * (x + dtype(_GELU_TANH_KAPPA) * cube)
    return (dtype(0.5) * x) * (dtype(1.0) + tanh(inner))


# ---- storage rounding ---------------------------------------------------------------------------

STORAGE_FORMATS = ("fp32", "fp64", "bf16", "fp16")


def round_to_storage(x: object, fmt: str) -> FloatArray:
    """Round binary32 values once (nearest even) to the storage format ``fmt``; return binary32 again.

    ``fmt`` is ``"bf16"`` or ``"fp16"`` (binary32 holds every value of both
    exactly), or the array's own format (``"fp32"`` for float32, ``"fp64"`` for
    float64), which returns ``x`` unchanged.  Rounding works on bit patterns
    (:func:`revcheck.oracle.rounding.round_to_format`): gradual underflow,
    overflow to ``±inf``, NaN stays NaN, signed zeros kept.

    Examples
    --------
    >>> round_to_storage(np.float32([1.00390625, 1.01171875, 3.4e38]), "bf16")  # ties to even; overflow
    array([1.      , 1.015625,      inf], dtype=float32)
    """
    from revcheck import formats
    from revcheck.oracle import rounding

    x = check_compute_array(x)
    if fmt not in STORAGE_FORMATS:
        raise ValueError(f"unknown storage format {fmt!r}; use one of {', '.join(STORAGE_FORMATS)}")
    if (fmt, x.dtype) in (("fp32", np.float32), ("fp64", np.float64)):
        return x
    if x.dtype != np.float32 or fmt in ("fp32", "fp64"):
        raise TypeError(
            f"round_to_storage({fmt!r}) takes float32 values (a {fmt} value is held in binary32); got "
            f"{x.dtype}"
        )
    source, target = formats.get("fp32"), formats.get(fmt)
    bits = np.ascontiguousarray(x).view(np.uint32)
    decoded = rounding.decode(bits, source, "ieee")
    extra = source.mantissa_bits - target.mantissa_bits
    rounded = rounding.round_to_format(
        decoded.negative, decoded.exponent, decoded.significand(source), extra, target, "ieee"
    )
    rounded = np.where(
        decoded.is_inf, rounding.special_bits(decoded.negative, target.overflow_magnitude, target), rounded
    )
    narrow = rounding.decode(rounded.astype(target.uint_dtype), target, "ieee")
    back = rounding.encode_exact(narrow, target, source).view(np.float32)
    return np.where(decoded.is_nan, x, back).reshape(x.shape)


# ----------------------------------------------------------------------------- sin, cos, layer norm
# Added for the Transformer-XL oracle (revcheck/oracle/memxl.py): its sinusoidal position table and its
# layer norms.  Same rules as above: basic correctly rounded operations only, sums in index order.

# fdlibm's three-part split of pi/2: each of _PIO2_1 and _PIO2_2 has 33 significant bits, so k * _PIO2_1
# and k * _PIO2_2 are exact for |k| < 2**20; the reduced argument then carries ~2**-100 relative error.
_PIO2_1 = float.fromhex("0x1.921fb54400000p+0")
_PIO2_2 = float.fromhex("0x1.0b4611a600000p-34")
_PIO2_3 = float.fromhex("0x1.3198a2e037073p-69")
_INV_PIO2 = float.fromhex("0x1.45f306dc9c883p-1")
TRIG_MAX_ARGUMENT = float(2**19)  # |x| beyond this: k no longer fits the exact-product condition
# Taylor coefficients for |r| <= pi/4 (r**2 <= 0.617): sin to r**25, cos to r**26; truncation < 1e-26.
_SIN = [(-1.0) ** n / float(np.prod(np.arange(1, 2 * n + 2, dtype=np.float64))) for n in range(12, -1, -1)]
_COS = [(-1.0) ** n / float(np.prod(np.arange(1, 2 * n + 1, dtype=np.float64))) for n in range(13, -1, -1)]


def _polynomial(coefficients: list[float], z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    p = np.full_like(z, coefficients[0])
    for coefficient in coefficients[1:]:
        p = p * z + coefficient
    return p


def _sin_cos64(x: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    if np.any(np.abs(x[np.isfinite(x)]) > TRIG_MAX_ARGUMENT):
        raise ValueError(
            f"sin/cos arguments must satisfy |x| <= {TRIG_MAX_ARGUMENT:g} (the declared range reduction is "
            "exact only there); scale the argument down, e.g. clamp positional distances"
        )
    finite = np.isfinite(x)
    safe = np.where(finite, x, 0.0)
    k = np.rint(safe * _INV_PIO2)
    r = ((safe - k * _PIO2_1) - k * _PIO2_2) - k * _PIO2_3
    z = r * r
    s = _polynomial(_SIN, z) * r
    c = _polynomial(_COS, z)
    quadrant = k.astype(np.int64) & 3
    sine = np.select([quadrant == 0, quadrant == 1, quadrant == 2], [s, c, -s], -c)
    cosine = np.select([quadrant == 0, quadrant == 1, quadrant == 2], [c, -s, -c], s)
    nan = np.float64(np.nan)
    return np.where(finite, sine, nan), np.where(finite, cosine, nan)


def sin(x: object) -> FloatArray:
    """``sin(x)``, position-independent and portable (Cody-Waite reduction by pi/2, Taylor polynomial).

    binary64: a few ulps; binary32: the binary64 result rounded once more.  ``|x|`` must not exceed
    :data:`TRIG_MAX_ARGUMENT` (``ValueError`` otherwise); inf and NaN give NaN.

    Examples
    --------
    >>> sin(np.float64([0.0, np.pi / 2, 3.0]))
    array([0.        , 1.        , 0.14112001])
    """
    x = check_compute_array(x)
    return _sin_cos64(x.astype(np.float64, copy=False))[0].astype(x.dtype, copy=False)


def cos(x: object) -> FloatArray:
    """``cos(x)``, built like :func:`sin` (same range, same accuracy).

    Examples
    --------
    >>> cos(np.float64([0.0, np.pi, 3.0]))
    array([ 1.       , -1.       , -0.9899925])
    """
    x = check_compute_array(x)
    return _sin_cos64(x.astype(np.float64, copy=False))[1].astype(x.dtype, copy=False)


def relu(x: object) -> FloatArray:
    """``max(x, 0)`` elementwise, exact; negative values and ``-0`` become ``+0``, NaN stays NaN."""
    x = check_compute_array(x)
    return np.where(x > 0, x, np.where(np.isnan(x), x, x.dtype.type(0)))


def layer_norm(x: object, weight: object, bias: object, eps: float) -> FloatArray:
    """Layer norm over the last axis in a declared order.

    ``mean = sum(x) / n``; ``c = x - mean``; ``var = sum(c * c) / n`` (sequential sums, index order);
    ``rstd = 1 / sqrt(var + eps)``; ``y = (c * rstd) * weight + bias`` -- every step one rounding, the
    structure of ``torch.nn.functional.layer_norm`` (biased variance, ``eps`` inside the root).

    Examples
    --------
    >>> layer_norm(np.float64([[1.0, 3.0]]), np.float64([1.0, 1.0]), np.float64([0.0, 0.0]), 0.0)
    array([[-1.,  1.]])
    """
    x = check_compute_array(x)
    weight = check_compute_array(weight, "weight")
    bias = check_compute_array(bias, "bias")
    if not (x.dtype == weight.dtype == bias.dtype):
        raise TypeError(
            f"x, weight and bias must have one dtype, got {x.dtype}, {weight.dtype}, {bias.dtype}"
        )
    n = x.dtype.type(x.shape[-1])
    mean = sequential_sum(x) / n
    centered = x - mean[..., None]
    var = sequential_sum(centered * centered) / n
    rstd = x.dtype.type(1) / np.sqrt(var + x.dtype.type(eps))
    return (centered * rstd[..., None]) * weight + bias
