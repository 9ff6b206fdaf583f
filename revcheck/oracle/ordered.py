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
  binary64 result rounded once more.

Inputs must already be arrays of the compute dtype (``float32`` or ``float64``);
nothing is silently converted.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "COMPUTE_DTYPES",
    "TRIG_MAX_ARGUMENT",
    "check_compute_array",
    "cos",
    "exp",
    "layer_norm",
    "matmul",
    "relu",
    "sequential_sum",
    "sin",
    "softmax",
    "sqrt",
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
