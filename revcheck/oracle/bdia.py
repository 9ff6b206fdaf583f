"""BDIA oracle: exactly reversible residual stacks on integer codes (docs/spec.md §3), pure NumPy.

Activations live on the fixed-point grid of step ``2**-l`` and are held as int64
codes ``X = x * 2**l``.  With per-sample ``gamma`` in ``{+1/2, -1/2}``::

    R(y)      = round_half_even(y * 2**l)
    s_{k-1}   = X_{k-1} mod 2
    X_1       = X_0 + R(h_0(x_0))
    X_{k+1}   = gamma_k (X_{k-1} + s_{k-1}) + R(y_k),   y_k = (1 - gamma_k) x_k + (1 + gamma_k) h_k(x_k)
    X_{k-1}   = (X_{k+1} - R(y_k)) / gamma_k - s_{k-1}

``y_k`` is evaluated as docs/spec.md §3 says: ``t1 = fl((1 - gamma) * x)``,
``t2 = fl((1 + gamma) * h)``, ``y = fl(t1 + t2)`` in the compute dtype, each
an ordinary NumPy ufunc (no fused multiply-add), with ``x = X * 2**-l``
rounded once (to nearest even) to the compute dtype.

``gamma = 0`` (inference) is the ordinary stack with the quantizer on the
block output: ``X_{k+1} = X_k + R(h_k(x_k))`` -- the same rule as the first
block, and NOT ``R(fl(x + h))``, which would round twice.

Range: every code of a state and every ``R(.)`` must satisfy
``|X| < CODE_LIMIT = 2**62``.  Then ``gamma (X + s) + R(y)`` and the inverse's
``2 (X_{k+1} - R(y))`` cannot overflow int64, and reconstruction is exact for
every magnitude (it never goes through a float).  Anything outside is an error,
never a silently wrong code.

This module never imports torch.  It is also the one home of BDIA's limits and
dtypes (:data:`CODE_LIMIT`, :data:`MAX_L`, :data:`PAPER_L`, :data:`COMPUTE_FORMATS`,
:data:`COMPUTE_DTYPES`): :class:`revcheck.nn.BDIAStack` and the audit import them.
"""

# ruff: noqa: E741  (``l``, the grid exponent, is the name docs/spec.md §3 and the API contract use)
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Union

import numpy as np

from revcheck import formats

__all__ = [
    "CODE_LIMIT",
    "COMPUTE_DTYPES",
    "COMPUTE_FORMATS",
    "MAX_L",
    "PAPER_L",
    "BDIATrace",
    "dequantize",
    "forward",
    "forward_step",
    "inverse",
    "inverse_step",
    "mix",
    "quantize",
    "side_bits",
]

CODE_LIMIT = 2**62
"""Exclusive bound on ``|X|`` for states and quantized block outputs (keeps int64 arithmetic exact)."""

MAX_L = 62
"""Largest accepted grid exponent ``l`` (the grid step is ``2**-l``)."""

PAPER_L = 9
"""The grid exponent the BDIA papers use; the default ``l`` of :class:`revcheck.nn.BDIAStack`."""

COMPUTE_FORMATS: tuple[str, ...] = ("fp32", "fp64")
"""Residual compute formats (names of :mod:`revcheck.formats`), the default first.

NumPy has no bf16, and an fp16 residual stream on a ``2**-l`` grid is unsupported:
low-precision blocks convert ``x_k`` to their own dtype instead.
"""


def _numpy_dtype(name: str) -> np.dtype[Any]:
    dtype = formats.get(name).numpy_float
    if dtype is None:
        raise TypeError(f"the BDIA compute format {name} has no NumPy dtype; the oracle cannot compute in it")
    return dtype


COMPUTE_DTYPES: tuple[np.dtype[Any], ...] = tuple(_numpy_dtype(name) for name in COMPUTE_FORMATS)
"""The NumPy dtypes of :data:`COMPUTE_FORMATS`."""

_ALLOWED_GAMMAS = (0.5, -0.5, 0.0)

Block = Union[Callable[[np.ndarray], Any], np.ndarray]  # noqa: UP007  (runtime alias; Python 3.10)


class BDIATrace(NamedTuple):
    """What :func:`forward` computed: ``codes`` = [X_0, ..., X_K], ``side_bits`` = [s_0, ..., s_{K-2}]."""

    codes: list[np.ndarray]
    side_bits: list[np.ndarray]


# ----------------------------------------------------------------------------- validation helpers


def _check_l(l: object) -> int:
    if isinstance(l, bool) or not isinstance(l, (int, np.integer)):
        raise TypeError(f"l must be an int (grid step 2**-l), got {type(l).__name__} {l!r}")
    if not 0 <= int(l) <= MAX_L:
        raise ValueError(f"l must satisfy 0 <= l <= {MAX_L}, got l={l}")
    return int(l)


def _check_compute_dtype(compute_dtype: object) -> np.dtype:
    dtype = np.dtype(compute_dtype)  # type: ignore[call-overload]
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(
            f"compute_dtype must be {' or '.join(map(str, COMPUTE_DTYPES))}, got {dtype}; low-precision "
            "blocks are supported by converting x_k to the block's dtype inside the block callable, not by "
            "the residual dtype"
        )
    return dtype


def _check_codes(codes: object, name: str, *, limit: int = CODE_LIMIT) -> np.ndarray:
    array = np.asarray(codes)
    if array.dtype.kind not in "iu":
        raise TypeError(
            f"{name} must be an integer array of codes (int64), got dtype {array.dtype}; "
            "use quantize(y, l) to turn floats into codes"
        )
    if array.dtype.kind == "u" and array.size and int(array.max()) >= limit:
        raise ValueError(f"{name} has codes >= 2**62 (max {int(array.max())}); BDIA codes need |X| < 2**62")
    array = array.astype(np.int64)
    if array.size:
        low, high = int(array.min()), int(array.max())
        if low <= -limit or high >= limit:
            worst = low if -low > high else high
            raise ValueError(
                f"{name} has a code {worst} outside the BDIA range |X| < 2**62; codes that large cannot "
                "take part in an exactly reversible step (int64 arithmetic would overflow)"
            )
    return array


def _check_float(values: object, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point array, got dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        bad = array[~np.isfinite(array)].ravel()[0]
        raise ValueError(f"{name} contains a non-finite value ({bad}); NaN/inf cannot be quantized to a code")
    return array


def _check_gamma(gamma: object, batch: int, *, allow_zero: bool, name: str = "gamma") -> np.ndarray:
    array = np.asarray(gamma)
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a real array of +0.5/-0.5 values, got dtype {array.dtype}")
    if array.ndim != 1 or array.shape[0] != batch:
        raise ValueError(
            f"{name} must have shape (B,) = ({batch},) (one gamma per sample), got {array.shape}"
        )
    values = array.astype(np.float64)
    allowed = _ALLOWED_GAMMAS if allow_zero else _ALLOWED_GAMMAS[:2]
    ok = np.isin(values, allowed)
    if not np.all(ok):
        bad = values[~ok][0]
        if bad == 0.0 or (not allow_zero and bad in _ALLOWED_GAMMAS):
            raise ValueError(
                f"{name} contains 0, which is not invertible: X_(k-1) = (X_(k+1) - R(y_k)) / gamma_k needs "
                "gamma in {+0.5, -0.5}"
            )
        accepted = "+0.5, -0.5 or 0 (inference)" if allow_zero else "+0.5 or -0.5"
        raise ValueError(f"{name} contains {bad}; accepted values are {accepted}")
    return values


def _batch_shape(gamma: np.ndarray, ndim: int) -> np.ndarray:
    return gamma.reshape(gamma.shape + (1,) * (ndim - 1))


# ----------------------------------------------------------------------------- elementary operations


def quantize(y: object, l: int) -> np.ndarray:
    """Integer codes ``round_half_even(y * 2**l)`` as int64.

    The scaling is exact (``y`` is widened to float64, which holds every fp16 /
    fp32 / fp64 value, and ``ldexp`` only changes the exponent); ``np.rint``
    rounds ties to even.  NaN/inf and values whose code does not fit int64
    raise ``ValueError``; non-float input raises ``TypeError``.
    """
    l = _check_l(l)
    values = _check_float(y, "y")
    scaled = np.rint(np.ldexp(values.astype(np.float64), l))
    too_big = ~(np.abs(scaled) < 2.0**63)
    if np.any(too_big):
        bad = values[too_big].ravel()[0]
        raise ValueError(f"y = {bad!r} times 2**{l} does not fit an int64 code (|y * 2**l| must be < 2**63)")
    return scaled.astype(np.int64)


def dequantize(codes: object, l: int, dtype: object = np.float32) -> np.ndarray:
    """Values ``codes * 2**-l`` in ``dtype``: one round-to-nearest-even conversion, then exact scaling."""
    l = _check_l(l)
    array = np.asarray(codes)
    if array.dtype.kind not in "iu":
        raise TypeError(f"codes must be an integer array (int64), got dtype {array.dtype}")
    target = np.dtype(dtype)  # type: ignore[call-overload]
    if target.kind != "f":
        raise TypeError(f"dtype must be a NumPy float dtype, got {target}")
    return np.ldexp(array.astype(np.int64).astype(target), -l).astype(target)


def side_bits(codes: object) -> np.ndarray:
    """``codes mod 2`` as uint8 zeros and ones (also for negative codes: two's complement parity)."""
    array = np.asarray(codes)
    if array.dtype.kind not in "iu":
        raise TypeError(f"codes must be an integer array (int64), got dtype {array.dtype}")
    return (array.astype(np.int64) & 1).astype(np.uint8)


def mix(x: np.ndarray, h: np.ndarray, gamma: np.ndarray, compute_dtype: object = np.float32) -> np.ndarray:
    """``y = fl(fl((1 - gamma) x) + fl((1 + gamma) h))`` in ``compute_dtype``; gamma has shape (B,)."""
    dtype = _check_compute_dtype(compute_dtype)
    gamma_b = _batch_shape(np.asarray(gamma, dtype=np.float64), np.ndim(x))
    one_minus = (1.0 - gamma_b).astype(dtype)
    one_plus = (1.0 + gamma_b).astype(dtype)
    t1 = np.multiply(one_minus, x.astype(dtype))
    t2 = np.multiply(one_plus, h.astype(dtype))
    return np.add(t1, t2)


def _check_step_inputs(X_cur: object, h: object, compute_dtype: object, name_prefix: str = "") -> tuple:
    cur = _check_codes(X_cur, f"{name_prefix}X_cur")
    dtype = _check_compute_dtype(compute_dtype)
    if cur.ndim < 1:
        raise ValueError(f"codes must have a leading batch dimension (B, ...), got shape {cur.shape}")
    h_arr = np.asarray(h)
    if h_arr.dtype.kind != "f":
        raise TypeError(f"block output h must be a float array, got dtype {h_arr.dtype}")
    if h_arr.shape != cur.shape:
        raise ValueError(f"block output h has shape {h_arr.shape}, but the state has shape {cur.shape}")
    return cur, dtype, _check_float(h_arr.astype(dtype), "block output h")


def _quantize_in_range(values: np.ndarray, l: int, what: str) -> np.ndarray:
    values = _check_float(values, what)
    codes = quantize(values, l)
    return _check_codes(codes, f"R({what})")


def forward_step(
    X_prev: object,
    X_cur: object,
    h: object,
    gamma: object,
    l: int,
    *,
    compute_dtype: object = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """One BDIA step: ``(X_{k+1}, s_{k-1})`` from ``X_{k-1}``, ``X_k`` and ``h = h_k(x_k)``.

    ``gamma`` has shape (B,) with values +0.5 / -0.5 (training) or 0
    (inference rows: ``X_{k+1} = X_k + R(h)``, ``X_prev`` unused there).
    """
    l = _check_l(l)
    cur, dtype, h_arr = _check_step_inputs(X_cur, h, compute_dtype)
    prev = _check_codes(X_prev, "X_prev")
    if prev.shape != cur.shape:
        raise ValueError(f"X_prev has shape {prev.shape}, X_cur has shape {cur.shape}; they must match")
    g = _check_gamma(gamma, cur.shape[0], allow_zero=True)
    x = dequantize(cur, l, dtype)
    y = mix(x, h_arr, g, dtype)
    s_prev = side_bits(prev)
    g_b = _batch_shape(g, cur.ndim)
    reversible = g_b != 0.0
    sign = np.where(g_b > 0, 1, -1).astype(np.int64)
    code_y = _quantize_in_range(np.where(reversible, y, 0).astype(dtype), l, "y")
    code_h = _quantize_in_range(np.where(reversible, 0, h_arr).astype(dtype), l, "h")
    half = (prev + s_prev.astype(np.int64)) >> 1  # exact: X + s is even
    X_next = np.where(reversible, sign * half + code_y, cur + code_h)
    return _check_codes(X_next, "X_next (result)"), s_prev


def inverse_step(
    X_next: object,
    X_cur: object,
    h: object,
    gamma: object,
    s_prev: object,
    l: int,
    *,
    compute_dtype: object = np.float32,
) -> np.ndarray:
    """Reconstruct ``X_{k-1} = (X_{k+1} - R(y_k)) / gamma_k - s_{k-1}`` exactly (integer arithmetic)."""
    l = _check_l(l)
    cur, dtype, h_arr = _check_step_inputs(X_cur, h, compute_dtype)
    nxt = _check_codes(X_next, "X_next")
    if nxt.shape != cur.shape:
        raise ValueError(f"X_next has shape {nxt.shape}, X_cur has shape {cur.shape}; they must match")
    bits = np.asarray(s_prev)
    if bits.dtype.kind not in "biu":
        raise TypeError(f"s_prev must be side bits (uint8 zeros and ones), got dtype {bits.dtype}")
    if bits.shape != cur.shape:
        raise ValueError(
            f"s_prev has shape {bits.shape}, but the state has shape {cur.shape}; they must match"
        )
    if bits.size and not np.all((bits == 0) | (bits == 1)):
        raise ValueError("s_prev must contain only 0 and 1 (side bits X mod 2)")
    g = _check_gamma(gamma, cur.shape[0], allow_zero=False)
    y = mix(dequantize(cur, l, dtype), h_arr, g, dtype)
    code_y = _quantize_in_range(y, l, "y")
    diff = nxt - code_y
    if diff.size and int(np.abs(diff).max()) > CODE_LIMIT // 2:
        raise ValueError(
            "X_next - R(y_k) exceeds 2**61 in magnitude: X_next was not produced by forward_step from these "
            "X_cur, h and gamma (the reconstructed X_prev would leave the range |X| < 2**62)"
        )
    sign = np.where(_batch_shape(g, cur.ndim) > 0, 1, -1).astype(np.int64)
    X_prev = sign * (diff * 2) - bits.astype(np.int64)
    return _check_codes(X_prev, "X_prev (result)")


# ----------------------------------------------------------------------------- whole stacks


def _block_output(block: Block | None, x: np.ndarray, index: int, dtype: np.dtype) -> np.ndarray:
    if block is None:
        raise ValueError(f"block {index}: no callable or precomputed output given")
    h = block(x) if callable(block) else block
    h_arr = np.asarray(h)
    if h_arr.shape != x.shape:
        raise ValueError(f"block {index}: output shape {h_arr.shape} differs from the state shape {x.shape}")
    if h_arr.dtype.kind != "f":
        raise TypeError(f"block {index}: output must be a float array, got dtype {h_arr.dtype}")
    if not np.all(np.isfinite(h_arr)):
        raise ValueError(f"block {index}: h_{index}(x_{index}) contains NaN/inf; it cannot be quantized")
    return h_arr.astype(dtype)


def _gamma_rows(gammas: object, depth: int, batch: int, *, allow_zero: bool) -> list[np.ndarray]:
    rows = [np.asarray(g) for g in gammas]  # type: ignore[attr-defined]
    if len(rows) != max(depth - 1, 0):
        raise ValueError(
            f"gammas must hold one row of shape (B,) per block k = 1..K-1, i.e. {max(depth - 1, 0)} rows for "
            f"K = {depth} blocks, got {len(rows)}"
        )
    return [_check_gamma(g, batch, allow_zero=allow_zero, name=f"gammas[{i}]") for i, g in enumerate(rows)]


def forward(
    X0: object,
    blocks_or_outputs: Sequence[Block],
    gammas: object,
    l: int,
    *,
    compute_dtype: object = np.float32,
) -> BDIATrace:
    """Run a BDIA stack of ``K = len(blocks_or_outputs)`` blocks from the codes ``X0``.

    Each entry is a callable ``x -> h`` (x in ``compute_dtype``, shape of the
    state) or a precomputed output array.  ``gammas`` holds the K-1 per-sample
    rows for blocks 1..K-1 (shape (K-1, B)).  Returns all codes X_0..X_K and
    the side bits s_0..s_{K-2}.
    """
    l = _check_l(l)
    dtype = _check_compute_dtype(compute_dtype)
    X_prev = _check_codes(X0, "X0")
    if X_prev.ndim < 1:
        raise ValueError(f"X0 must have a leading batch dimension (B, ...), got shape {X_prev.shape}")
    depth = len(blocks_or_outputs)
    if depth == 0:
        raise ValueError("a BDIA stack needs at least one block")
    rows = _gamma_rows(gammas, depth, X_prev.shape[0], allow_zero=True)
    h0 = _block_output(blocks_or_outputs[0], dequantize(X_prev, l, dtype), 0, dtype)
    X_cur = _check_codes(X_prev + _quantize_in_range(h0, l, "h_0"), "X_1")
    codes = [X_prev, X_cur]
    bits: list[np.ndarray] = []
    for k in range(1, depth):
        h = _block_output(blocks_or_outputs[k], dequantize(X_cur, l, dtype), k, dtype)
        X_next, s_prev = forward_step(X_prev, X_cur, h, rows[k - 1], l, compute_dtype=dtype)
        codes.append(X_next)
        bits.append(s_prev)
        X_prev, X_cur = X_cur, X_next
    return BDIATrace(codes, bits)


def inverse(
    X_top: object,
    X_below: object,
    blocks_or_outputs: Sequence[Block | None],
    gammas: object,
    side_bits_list: Sequence[object],
    l: int,
    *,
    compute_dtype: object = np.float32,
) -> list[np.ndarray]:
    """Reconstruct all codes [X_0, ..., X_K] from the top two states ``X_K``, ``X_{K-1}``.

    ``blocks_or_outputs`` has the K entries of :func:`forward` (entry 0 is not
    needed and may be None); ``side_bits_list`` holds s_0..s_{K-2}.
    """
    l = _check_l(l)
    dtype = _check_compute_dtype(compute_dtype)
    X_next = _check_codes(X_top, "X_top")
    X_cur = _check_codes(X_below, "X_below")
    if X_next.shape != X_cur.shape or X_cur.ndim < 1:
        raise ValueError(f"X_top {X_next.shape} and X_below {X_cur.shape} must have one shape (B, ...)")
    depth = len(blocks_or_outputs)
    if depth == 0:
        raise ValueError("a BDIA stack needs at least one block")
    rows = _gamma_rows(gammas, depth, X_cur.shape[0], allow_zero=False)
    if len(side_bits_list) != depth - 1:
        raise ValueError(
            f"side_bits_list must hold K-1 = {depth - 1} arrays s_0..s_(K-2), got {len(side_bits_list)}"
        )
    codes = [X_next, X_cur]
    for k in range(depth - 1, 0, -1):
        h = _block_output(blocks_or_outputs[k], dequantize(X_cur, l, dtype), k, dtype)
        X_prev = inverse_step(X_next, X_cur, h, rows[k - 1], side_bits_list[k - 1], l, compute_dtype=dtype)
        codes.append(X_prev)
        X_next, X_cur = X_cur, X_prev
    codes.reverse()
    return codes
