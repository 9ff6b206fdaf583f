"""``BDIAStack``: an exactly reversible residual stack (SPEC section 3) for torch training.

Arithmetic (identical in both modes, and equal bit for bit to :mod:`revcheck.oracle.bdia`)::

    X_0     = R(x_0)                          straight-through gradient to the input
    X_1     = X_0 + R(h_0(x_0))
    X_{k+1} = gamma_k (X_{k-1} + s_{k-1}) + R(y_k),   y_k = fl(fl((1-gamma_k) x_k) + fl((1+gamma_k) h_k))
    output  = X_K * 2**-l  in ``compute_dtype``

``x_k = X_k * 2**-l`` is rounded once to ``compute_dtype`` (the value used in
``y_k`` and the one gradients refer to) and then converted to the block's dtype
(its first floating parameter/buffer, else ``compute_dtype``); the block output
is converted back to ``compute_dtype``.  ``gamma_k`` is drawn per sample per
block from {+1/2, -1/2} with the stack's own CPU ``torch.Generator`` in
training; ``eval()`` uses gamma = 0, i.e. ``X_{k+1} = X_k + R(h_k(x_k))``.

``mode="reversible"`` runs the forward under ``no_grad`` and saves, per call
(``ctx.save_for_backward``, so ``saved_tensors_hooks`` see all of it):

=========================  ==========================================  =====================
tensor                     shape / dtype                               bytes
=========================  ==========================================  =====================
X_K, X_{K-1}               2 x state, int64                            16 per element
side bits s_0..s_{K-2}     (K-1, ceil(N/8)) uint8, 8 bits per byte     ~1/8 per element per block
gamma signs                (K-1, B) int8                               1 per sample per block
checksums of X_0..X_{K-2}  (K-1,) int64 (reconstruction check)         8 per block
RNG states                 one CPU (and CUDA) state per block that     ~5 KiB per distinct state
                           changed it (deduplicated), for dropout
=========================  ==========================================  =====================

Nothing else: no block activations.  Backward walks from the top: recompute
``y_k`` with grad from the reconstructed ``x_k`` (RNG state and autocast state
restored as in ``torch.utils.checkpoint``, inside ``torch.random.fork_rng`` so
the caller's RNG state is untouched), reconstruct ``X_{k-1}`` with integer
arithmetic, backpropagate through ``y_k`` with a straight-through gradient at
``R`` and pass ``gamma_k * dL/dx_{k+1}`` on to ``x_{k-1}``.

``mode="stored"`` is the plain loop under ordinary autograd: per block the same
code, with ``x_{k+1} = STE(X_{k+1} * 2**-l <- gamma_k x_{k-1} + y_k)`` (first
block: ``x_0 + h_0``).  The reversible backward sums every gradient in the order
ordinary autograd does (the contribution from the blocks above is injected into
the recomputed block's graph ahead of the local ones, see ``_Inject``), so
gradients of the input and of every parameter -- shared ones included -- equal
the stored mode's, and those of a hand-written loop of the same forward, bit
for bit.  ``gamma_k dL/dx_{k+1}`` is one rounded multiplication (exact unless it
underflows).

Blocks must be deterministic given the RNG state (same kernels, shapes and
dtype) and free of side effects (BatchNorm running statistics would be updated
twice).  A block whose recomputation differs is reported in backward by name.
Values that cannot be reconstructed (NaN/inf in ``h``/``y``, codes with
``|X| >= 2**62``) raise ``BDIARangeError`` at the end of the forward, naming the
first offending block.
"""

# ruff: noqa: E741  (``l``, the grid exponent, is the name SPEC and the API contract use)
from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from revcheck.oracle.bdia import CODE_LIMIT, MAX_L

__all__ = [
    "BDIARangeError",
    "BDIAReconstructionError",
    "BDIAStack",
    "BDIAStackTrace",
    "pack_bits",
    "unpack_bits",
]

Mode = Literal["reversible", "stored"]
_MODES = ("reversible", "stored")
_COMPUTE_DTYPES = (torch.float32, torch.float64)


class BDIARangeError(ValueError):
    """A value in the forward pass cannot be reconstructed (NaN/inf, or a code outside |X| < 2**62)."""


class BDIAReconstructionError(RuntimeError):
    """Backward reconstructed a state that differs from the forward's (a block is not deterministic)."""


@dataclass
class BDIAStackTrace:
    """Everything one forward computed (see :meth:`BDIAStack.trace`)."""

    codes: list[Tensor]
    side_bits: list[Tensor]
    block_outputs: list[Tensor]
    gamma_signs: Tensor


# ----------------------------------------------------------------------------- bit packing


def pack_bits(bits: Tensor) -> Tensor:
    """Pack a tensor of 0/1 values into uint8, 8 per byte; element i is bit ``i % 8`` of byte ``i // 8``."""
    flat = bits.reshape(-1).to(torch.uint8)
    if flat.numel() and bool(((flat != 0) & (flat != 1)).any()):
        raise ValueError("pack_bits takes only 0/1 values")
    return _pack_bits_unchecked(flat)


def _pack_bits_unchecked(bits: Tensor) -> Tensor:
    """:func:`pack_bits` without the 0/1 validation (the stack's side bits are parity by construction)."""
    flat = bits.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    if sys.byteorder != "little":
        shifts = torch.arange(8, device=flat.device, dtype=torch.uint8)
        return (flat.view(-1, 8) << shifts).sum(dim=1, dtype=torch.uint8)
    if flat.storage_offset() % 8:
        flat = flat.clone()  # an int64 view needs 8-byte alignment
    # Eight 0/1 bytes read as one little-endian word hold bit i at position 8 i; three shift-ors
    # fold them into the low byte (the word is non-negative, so no sign bits shift in).  About
    # 8x fewer element operations than shifting and summing the bytes.
    word = flat.view(torch.int64)
    word = word | (word >> 7)
    word |= word >> 14
    word |= word >> 28
    return word.to(torch.uint8)  # integer narrowing keeps the low byte


def unpack_bits(packed: Tensor, shape: Sequence[int] | torch.Size) -> Tensor:
    """Inverse of :func:`pack_bits`: uint8 0/1 tensor of ``shape``."""
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed side bits must be uint8, got {packed.dtype}")
    count = math.prod(shape)
    if packed.numel() != (count + 7) // 8:
        raise ValueError(
            f"{packed.numel()} packed bytes cannot hold a tensor of shape {tuple(shape)} "
            f"(needs {(count + 7) // 8} bytes)"
        )
    return _unpack_bits_unchecked(packed, shape)


def _unpack_bits_unchecked(packed: Tensor, shape: Sequence[int] | torch.Size) -> Tensor:
    count = math.prod(shape)
    shifts = torch.arange(8, device=packed.device, dtype=torch.uint8)
    bits = (packed.reshape(-1, 1) >> shifts) & 1
    return bits.reshape(-1)[:count].reshape(tuple(shape))


# ----------------------------------------------------------------------------- autograd pieces


@dataclass(frozen=True)
class _Coefficients:
    """gamma-dependent factors, shape (K-1, B, 1, ...): compute dtype, then int64 signs and 2 x signs."""

    one_minus: Tensor
    one_plus: Tensor
    gamma: Tensor
    sign: Tensor
    twice_sign: Tensor


def _within_code_limit(values: Tensor) -> Tensor:
    """0-dim flag: every value finite with ``|value| < 2**62`` (one pass: min and max, no temporaries)."""
    if values.numel() == 0:
        return torch.ones((), dtype=torch.bool, device=values.device)
    low, high = torch.aminmax(values)
    limit = CODE_LIMIT if not values.is_floating_point() else float(CODE_LIMIT)
    return (low > -limit) & (high < limit)  # NaN compares False


class _Input(torch.autograd.Function):
    """``x_0 = X_0 * 2**-l``; straight-through gradient to the (possibly other-dtype) input."""

    @staticmethod
    def forward(ctx: Any, x_in: Tensor, codes: Tensor, stack: BDIAStack) -> Tensor:
        ctx.in_dtype = x_in.dtype
        return stack._dequantize(codes)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return grad.to(ctx.in_dtype), None, None


class _StraightThrough(torch.autograd.Function):
    """Value ``X * 2**-l`` from the codes; the gradient goes unchanged to the unquantized expression."""

    @staticmethod
    def forward(ctx: Any, expression: Tensor, codes: Tensor, stack: BDIAStack) -> Tensor:
        return stack._dequantize(codes)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return grad, None, None


class _Inject(torch.autograd.Function):
    """Identity on ``root`` whose backward first hands ``extras[i]`` to ``targets[i]``.

    A recomputed block's local graph is rooted here, so these gradients (from the
    blocks above) reach each target's buffer before any local one: the same
    order of summation as ordinary autograd through the whole stack.
    """

    @staticmethod
    def forward(ctx: Any, root: Tensor, extras: list[Tensor | None], *targets: Tensor) -> Tensor:
        ctx.extras = extras
        return root.view_as(root)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        return (grad, None, *ctx.extras)


# ----------------------------------------------------------------------------- the module


class BDIAStack(nn.Module):
    """A stack of residual blocks ``x <- x + h_k(x)`` made exactly reversible by BDIA (SPEC section 3).

    ``blocks``: modules mapping a tensor of the input's shape (B, ...) to the same
    shape.  ``l``: grid exponent (step ``2**-l``).  ``mode``: ``"reversible"``
    (O(1) activations in depth) or ``"stored"`` (ordinary autograd, same bits).
    ``compute_dtype``: residual dtype, float32 or float64.  ``seed``: seed of the
    stack's own gamma generator (None: fresh OS entropy).  ``quantize=False`` is
    the plain residual stack ``x + h(x)``, allowed only in eval().
    ``preserve_rng_state`` (default True) saves RNG states so dropout is replayed.
    ``verify_reconstruction`` (default True) checks every reconstructed state
    against a checksum taken in the forward (a wrapping int64 sum: one reduction per
    block each way, well under 1% of a training step, compared with one host sync at the
    end of backward), so a non-deterministic block is named instead of silently giving
    wrong gradients.  Without it only the first block's recomputation is checked.

    For tests and debugging: ``last_gamma_signs`` holds the (K-1, B) int8 signs of
    the latest training forward; with ``record_reconstruction = True`` a
    reversible backward leaves the codes X_0..X_K it reconstructed in
    ``last_reconstruction``; :meth:`trace` returns every code, side bit and
    block output of one forward.  In ``eval()`` both modes run ordinary autograd
    (gamma = 0 cannot be inverted, so there is nothing to reconstruct from).
    """

    # Planted-bug switch for the gallery: when False, backward does not restore RNG states.
    _replay_rng: bool = True

    def __init__(
        self,
        blocks: Sequence[nn.Module],
        *,
        l: int = 9,
        mode: Mode = "reversible",
        compute_dtype: torch.dtype = torch.float32,
        seed: int | None = None,
        quantize: bool = True,
        preserve_rng_state: bool = True,
        verify_reconstruction: bool = True,
    ) -> None:
        super().__init__()
        blocks = list(blocks)
        if not blocks:
            raise ValueError("BDIAStack needs at least one block")
        for index, block in enumerate(blocks):
            if not isinstance(block, nn.Module):
                raise TypeError(f"block {index} is a {type(block).__name__}; blocks must be torch.nn.Module")
        if isinstance(l, bool) or not isinstance(l, int) or not 0 <= l <= MAX_L:
            raise ValueError(f"l must be an int with 0 <= l <= {MAX_L}, got {l!r}")
        if compute_dtype not in _COMPUTE_DTYPES:
            raise ValueError(
                f"compute_dtype must be torch.float32 or torch.float64, got {compute_dtype}; run "
                "low-precision blocks by giving them that dtype (or autocast); the residual stays fp32/fp64"
            )
        self.blocks = nn.ModuleList(blocks)
        self.l = l
        self.mode = mode
        self.compute_dtype = compute_dtype
        self.quantize = quantize
        self.preserve_rng_state = preserve_rng_state
        self.verify_reconstruction = verify_reconstruction
        self.generator = torch.Generator(device="cpu")
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)
        self.last_gamma_signs: Tensor | None = None
        self.record_reconstruction = False
        self.last_reconstruction: list[Tensor] | None = None
        self._check_mode()

    # ------------------------------------------------------------ overridable arithmetic (gallery hooks)

    def _quantize_codes(self, values: Tensor) -> tuple[Tensor, Tensor]:
        """``(R(values), ok)``: round-half-even codes and a 0-dim flag "finite and |code| < 2**62"."""
        scaled = values * float(2**self.l)  # exact: power-of-two scaling in fp32/fp64
        rounded = torch.round(scaled)  # round half to even
        return rounded.to(torch.int64), _within_code_limit(rounded)  # NaN compares False

    def _reconstruction_codes(self, values: Tensor) -> Tensor:
        """``R(values)`` in backward, where the forward already checked the range."""
        if type(self)._quantize_codes is BDIAStack._quantize_codes:
            return torch.round(values * float(2**self.l)).to(torch.int64)  # same ops, no range flag
        return self._quantize_codes(values)[0]

    def _mix(self, x: Tensor, h: Tensor, one_minus: Tensor, one_plus: Tensor) -> Tensor:
        """``y = fl(fl((1-gamma) x) + fl((1+gamma) h))``: separate kernels, no fused multiply-add."""
        t1 = one_minus * x
        t2 = one_plus * h
        return t1 + t2

    def _side_bits(self, X_prev: Tensor, X_cur: Tensor) -> Tensor:
        """``s_{k-1} = X_{k-1} mod 2`` (int64 zeros and ones)."""
        return X_prev & 1

    def _draw_gamma_signs(self, count: int, batch: int) -> Tensor:
        """Signs of gamma_1..gamma_{K-1} per sample, int8 (count, batch), from the stack's own generator."""
        bits = torch.randint(0, 2, (count, batch), generator=self.generator, dtype=torch.int8)
        return bits * 2 - 1

    # ------------------------------------------------------------------ shared per-block code

    def _dequantize(self, codes: Tensor) -> Tensor:
        return codes.to(self.compute_dtype) * (2.0**-self.l)

    def _block_dtype(self, block: nn.Module) -> torch.dtype:
        for tensor in [*block.parameters(), *block.buffers()]:
            if tensor.is_floating_point():
                return tensor.dtype
        return self.compute_dtype

    def _block_output(self, index: int, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """``h_index(x)`` in ``compute_dtype``; ``dtype``: the block's dtype if already known."""
        block = self.blocks[index]
        h = block(x.to(self._block_dtype(block) if dtype is None else dtype))
        if not isinstance(h, Tensor) or h.shape != x.shape:
            shape = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
            raise ValueError(
                f"BDIAStack block {index} returned {shape}; it must return the input shape {tuple(x.shape)}"
            )
        return h.to(self.compute_dtype)

    def _coefficients(self, signs: Tensor, ndim: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        gamma = signs.to(device=device, dtype=self.compute_dtype).reshape((-1,) + (1,) * (ndim - 1)) * 0.5
        return 1.0 - gamma, 1.0 + gamma, gamma

    def _coefficient_table(self, signs: Tensor, ndim: int, device: torch.device) -> _Coefficients:
        """Per-block coefficients of all K-1 gamma rows at once (row ``k - 1`` belongs to block ``k``)."""
        one_minus, one_plus, gamma = self._coefficients(signs.reshape(-1), ndim, device)
        shape = (*signs.shape, *(1,) * (ndim - 1))
        sign = signs.to(device=device, dtype=torch.int64).reshape(shape)
        return _Coefficients(
            one_minus.reshape(shape), one_plus.reshape(shape), gamma.reshape(shape), sign, sign * 2
        )

    def _input_codes(self, x: Tensor) -> tuple[Tensor, Tensor]:
        wide = (
            x if x.dtype == torch.float64 else x.to(torch.float32)
        )  # exact widening; fp16*2**l could overflow
        return self._quantize_codes(wide)

    def _check_mode(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"mode must be 'reversible' or 'stored', got {self.mode!r}")

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(
                f"BDIAStack input must be a floating-point tensor, got {getattr(x, 'dtype', type(x))}"
            )
        if x.dim() < 1:
            raise ValueError("BDIAStack input needs a leading batch dimension (B, ...)")

    def _gamma_signs(self, x: Tensor, gamma_signs: Tensor | None) -> Tensor:
        count, batch = len(self.blocks) - 1, x.shape[0]
        if gamma_signs is None:
            return self._draw_gamma_signs(count, batch)
        if gamma_signs.shape != (count, batch):
            raise ValueError(
                f"gamma_signs must have shape (K-1, B) = ({count}, {batch}), got {tuple(gamma_signs.shape)}"
            )
        if gamma_signs.is_floating_point() or not bool(((gamma_signs == 1) | (gamma_signs == -1)).all()):
            raise ValueError("gamma_signs must be integers +1 (gamma = +1/2) or -1 (gamma = -1/2)")
        return gamma_signs.to(device="cpu", dtype=torch.int8)

    @staticmethod
    def _raise_range(flags: list[tuple[int, str, Tensor]]) -> None:
        if not flags:
            return
        ok = torch.stack([flag for _, _, flag in flags])
        if bool(ok.all()):
            return
        first = int((~ok).nonzero()[0, 0])
        index, what, _ = flags[first]
        where = "input" if index < 0 else f"block {index}"
        raise BDIARangeError(
            f"BDIAStack {where}: {what} -- this value cannot be reconstructed exactly. Codes must be "
            f"finite with |X| < 2**62; rescale the block, lower l, or find the NaN/inf in the block"
        )

    # ------------------------------------------------------------------ forward passes

    def forward(self, x: Tensor, *, gamma_signs: Tensor | None = None) -> Tensor:
        """Run the stack on ``x`` (B, ...); returns ``x_K`` in ``compute_dtype``.

        ``gamma_signs`` (int, shape (K-1, B), values +-1) overrides the drawn gammas in training.
        """
        self._check_input(x)
        self._check_mode()
        if not self.training:
            if gamma_signs is not None:
                raise ValueError("gamma_signs applies to training only; eval() uses gamma = 0")
            return self._forward_eval(x)
        if not self.quantize:
            raise ValueError(
                "quantize=False is allowed only in eval(): training needs the 2**-l grid for exact "
                "reconstruction; call .eval() or construct with quantize=True"
            )
        signs = self._gamma_signs(x, gamma_signs)
        self.last_gamma_signs = signs
        params = [p for p in self.parameters() if p.requires_grad]
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or bool(params))
        if self.mode == "stored" or not needs_grad:
            return self._forward_stored(x, signs)
        return _ReversibleBDIA.apply(self, signs, x, *params)

    def _forward_eval(self, x: Tensor) -> Tensor:
        if not self.quantize:
            state = x.to(self.compute_dtype)
            for index in range(len(self.blocks)):
                state = state + self._block_output(index, state)
            return state
        flags: list[tuple[int, str, Tensor]] = []
        X_cur, ok = self._input_codes(x)
        flags.append((-1, "the input x_0 is not finite or too large", ok))
        x_cur = _Input.apply(x, X_cur, self)
        for index in range(len(self.blocks)):
            h = self._block_output(index, x_cur)
            code_h, ok = self._quantize_codes(h)
            flags.append((index, f"h_{index}(x_{index}) is not finite or |R(h)| >= 2**62", ok))
            X_next = X_cur + code_h
            flags.append((index, f"X_{index + 1} is outside |X| < 2**62", _within_code_limit(X_next)))
            x_cur = _StraightThrough.apply(x_cur + h, X_next, self)
            X_cur = X_next
        self._raise_range(flags)
        return x_cur

    def _forward_stored(self, x: Tensor, signs: Tensor) -> Tensor:
        """Training forward under ordinary autograd (also the no-grad path of the reversible mode)."""
        flags: list[tuple[int, str, Tensor]] = []
        X_prev, ok = self._input_codes(x)
        flags.append((-1, "the input x_0 is not finite or too large", ok))
        x_prev = _Input.apply(x, X_prev, self)
        h0 = self._block_output(0, x_prev)
        code_h, ok = self._quantize_codes(h0)
        flags.append((0, "h_0(x_0) is not finite or |R(h_0)| >= 2**62", ok))
        X_cur = X_prev + code_h
        flags.append((0, "X_1 is outside |X| < 2**62", _within_code_limit(X_cur)))
        x_cur = _StraightThrough.apply(x_prev + h0, X_cur, self)
        table = self._coefficient_table(signs, x.dim(), x.device)
        for index in range(1, len(self.blocks)):
            row = index - 1
            y = self._mix(x_cur, self._block_output(index, x_cur), table.one_minus[row], table.one_plus[row])
            code_y, ok = self._quantize_codes(y)
            flags.append((index, f"y_{index} is not finite or |R(y_{index})| >= 2**62", ok))
            half = (X_prev + self._side_bits(X_prev, X_cur)) >> 1
            X_next = half * table.sign[row] + code_y
            flags.append((index, f"X_{index + 1} is outside |X| < 2**62", _within_code_limit(X_next)))
            x_next = _StraightThrough.apply(table.gamma[row] * x_prev + y, X_next, self)
            X_prev, X_cur, x_prev, x_cur = X_cur, X_next, x_cur, x_next
        self._raise_range(flags)
        return x_cur

    @torch.no_grad()
    def trace(self, x: Tensor, *, gamma_signs: Tensor | None = None) -> BDIAStackTrace:
        """Run the training-mode forward arithmetic keeping every code, side bit and block output.

        For tests and debugging (it keeps O(K) tensors).  Uses and advances the
        gamma generator and the global RNG exactly as :meth:`forward` does.
        """
        self._check_input(x)
        signs = self._gamma_signs(x, gamma_signs)
        X_prev, ok = self._input_codes(x)
        flags: list[tuple[int, str, Tensor]] = [(-1, "the input x_0 is not finite or too large", ok)]
        h0 = self._block_output(0, self._dequantize(X_prev))
        code_h, ok = self._quantize_codes(h0)
        flags.append((0, "h_0(x_0) is not finite or |R(h_0)| >= 2**62", ok))
        X_cur = X_prev + code_h
        codes, bits, outputs = [X_prev, X_cur], [], [h0]
        for index in range(1, len(self.blocks)):
            X_next, s_prev, h, ok = self._step_codes(index, X_prev, X_cur, signs[index - 1])
            flags.append((index, f"y_{index} or X_{index + 1} cannot be reconstructed", ok))
            codes.append(X_next)
            bits.append(s_prev.to(torch.uint8))
            outputs.append(h)
            X_prev, X_cur = X_cur, X_next
        self._raise_range(flags)
        return BDIAStackTrace(codes, bits, outputs, signs)

    def _step_codes(
        self,
        index: int,
        X_prev: Tensor,
        X_cur: Tensor,
        sign_row: Tensor,
        table: _Coefficients | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple:
        """One no-grad BDIA step on codes: (X_next, s_prev, h, ok).

        ``table``: :meth:`_coefficient_table` of all signs (else computed from ``sign_row``);
        ``dtype``: the block's dtype if already known.
        """
        x_cur = self._dequantize(X_cur)
        if table is None:
            table = self._coefficient_table(sign_row.reshape(1, -1), X_cur.dim(), X_cur.device)
            row = 0
        else:
            row = index - 1
        h = self._block_output(index, x_cur, dtype)
        y = self._mix(x_cur, h, table.one_minus[row], table.one_plus[row])
        code_y, ok_y = self._quantize_codes(y)
        s_prev = self._side_bits(X_prev, X_cur)
        # gamma (X_{k-1} + s_{k-1}) as sign * ((X + s) >> 1): exact, |half| <= 2**61
        X_next = X_prev + s_prev
        X_next >>= 1  # in place: one fresh int64 buffer per step instead of four
        X_next *= table.sign[row]
        X_next += code_y
        ok = ok_y & _within_code_limit(X_next)
        return X_next, s_prev, h, ok

    def extra_repr(self) -> str:
        return (
            f"depth={len(self.blocks)}, l={self.l}, mode={self.mode!r}, compute_dtype={self.compute_dtype}, "
            f"quantize={self.quantize}"
        )


# ----------------------------------------------------------------------------- reversible autograd function


def _checksum(codes: Tensor) -> Tensor:
    """Wrapping int64 sum of the codes: any change of a single code (|X| < 2**62) changes it.

    One reduction per block in forward and in backward -- cheap enough to stay on by default,
    and it names the block whose recomputation differs (a changed state also drifts every
    state below it, and the first block's check ``X_1 - X_0 == R(h_0)`` catches it at the end).
    """
    return codes.sum(dtype=torch.int64)


class _RNGStates:
    """Per-block RNG states as in torch.utils.checkpoint, deduplicated when a block draws nothing."""

    def __init__(self, device: torch.device) -> None:
        self.cuda_index = device.index if device.type == "cuda" else None
        if device.type == "cuda" and self.cuda_index is None:
            self.cuda_index = torch.cuda.current_device()
        self.states: list[Tensor] = []  # CPU state, then CUDA state, per distinct capture
        self.which: list[int] = []

    def capture(self) -> None:
        current = [torch.get_rng_state()]
        if self.cuda_index is not None:
            current.append(torch.cuda.get_rng_state(self.cuda_index))
        width = len(current)
        if self.states and all(torch.equal(a, b) for a, b in zip(self.states[-width:], current, strict=True)):
            self.which.append(len(self.states) // width - 1)
            return
        self.states.extend(current)
        self.which.append(len(self.states) // width - 1)

    def restore(self, block: int, states: Sequence[Tensor]) -> None:
        width = 1 if self.cuda_index is None else 2
        slot = self.which[block] * width
        torch.set_rng_state(states[slot])
        if self.cuda_index is not None:
            torch.cuda.set_rng_state(states[slot + 1], self.cuda_index)

    def devices(self) -> list[int]:
        return [] if self.cuda_index is None else [self.cuda_index]


def _autocast_state(device_type: str) -> dict[str, Any]:
    return {
        "device_type": device_type,
        "enabled": torch.is_autocast_enabled(device_type),
        "dtype": torch.get_autocast_dtype(device_type),
        "cache_enabled": torch.is_autocast_cache_enabled(),
    }


class _ReversibleBDIA(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, stack: BDIAStack, signs: Tensor, x: Tensor, *params: Tensor) -> Tensor:
        depth = len(stack.blocks)
        rng = _RNGStates(x.device)
        ctx.autocast = _autocast_state(x.device.type)
        # Looked up once per call: walking every block's parameters per step costs more than the
        # integer arithmetic of a small block.
        dtypes = [stack._block_dtype(block) for block in stack.blocks]
        flags: list[tuple[int, str, Tensor]] = []
        X_prev, ok = stack._input_codes(x)
        flags.append((-1, "the input x_0 is not finite or too large", ok))
        if stack.preserve_rng_state:
            rng.capture()
        h0 = stack._block_output(0, stack._dequantize(X_prev), dtypes[0])
        code_h, ok = stack._quantize_codes(h0)
        flags.append((0, "h_0(x_0) is not finite or |R(h_0)| >= 2**62", ok))
        X_cur = X_prev + code_h
        flags.append((0, "X_1 is outside |X| < 2**62", _within_code_limit(X_cur)))
        del h0, code_h
        numel = X_cur.numel()
        table = stack._coefficient_table(signs, x.dim(), x.device)
        packed = torch.empty((depth - 1, (numel + 7) // 8), dtype=torch.uint8, device=x.device)
        verify = stack.verify_reconstruction
        checks = torch.empty((depth - 1 if verify else 0,), dtype=torch.int64, device=x.device)
        for index in range(1, depth):
            if stack.preserve_rng_state:
                rng.capture()
            X_next, s_prev, _, ok = stack._step_codes(
                index, X_prev, X_cur, signs[index - 1], table, dtypes[index]
            )
            flags.append(
                (
                    index,
                    f"y_{index} is not finite, or R(y_{index}) or X_{index + 1} is outside |X| < 2**62",
                    ok,
                )
            )
            packed[index - 1] = _pack_bits_unchecked(s_prev)
            if verify:
                checks[index - 1] = _checksum(X_prev)
            X_prev, X_cur = X_cur, X_next
        stack._raise_range(flags)
        ctx.stack = stack
        ctx.rng = rng
        ctx.shape = X_cur.shape
        ctx.in_dtype = x.dtype
        ctx.dtypes = dtypes
        ctx.block_params = [[p for p in block.parameters() if p.requires_grad] for block in stack.blocks]
        ctx.save_for_backward(X_cur, X_prev, packed, signs, checks, *rng.states)
        return stack._dequantize(X_cur)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        stack: BDIAStack = ctx.stack
        X_top, X_cur, packed, signs, checks, *rng_states = ctx.saved_tensors
        # rebuilt from the saved signs (a few tiny ops) so that everything kept is in saved_tensors
        table = stack._coefficient_table(signs, X_cur.dim(), X_cur.device)
        params = [p for p in stack.parameters() if p.requires_grad]
        slot = {id(p): i for i, p in enumerate(params)}
        param_grads: list[Tensor | None] = [None] * len(params)
        depth = len(stack.blocks)
        verify = checks.numel() > 0
        reconstructed_sums: list[Tensor] = []  # checksums of X_{K-2} .. X_0, compared once at the end
        reconstructed = [X_top, X_cur] if stack.record_reconstruction else None
        g_top: Tensor = grad_out  # dL/dx_{k+1}, complete
        g_below: Tensor | None = None  # the part of dL/dx_k that comes from above block k (gamma path)
        g_input: Tensor | None = None
        first_block_differs: Tensor | None = None
        replay = stack.preserve_rng_state and stack._replay_rng
        with torch.random.fork_rng(devices=ctx.rng.devices(), enabled=replay), torch.autocast(**ctx.autocast):
            for index in range(depth - 1, -1, -1):
                block_params = ctx.block_params[index]
                if replay:
                    ctx.rng.restore(index, rng_states)
                with torch.enable_grad():
                    x_leaf = stack._dequantize(X_cur).requires_grad_(True)
                    h = stack._block_output(index, x_leaf, ctx.dtypes[index])
                    if index > 0:
                        row = index - 1
                        quantized = stack._mix(x_leaf, h, table.one_minus[row], table.one_plus[row])  # y_k
                        expression = quantized
                    else:
                        quantized = h
                        expression = x_leaf + h  # the first block's x_0 + h_0(x_0)
                    targets = [x_leaf, *block_params]
                    extras = [g_below, *[param_grads[slot[id(p)]] for p in block_params]]
                    if any(extra is not None for extra in extras):
                        expression = _Inject.apply(expression, extras, *targets)
                with torch.no_grad():
                    code = stack._reconstruction_codes(quantized.detach())
                    if index > 0:
                        s_prev = _unpack_bits_unchecked(packed[index - 1], ctx.shape)
                        # X_{k-1} = (X_{k+1} - R(y_k)) / gamma_k - s_{k-1}; 1/gamma = 2 sign, exact in int64
                        X_prev = X_top - code
                        X_prev *= table.twice_sign[index - 1]  # in place: one fresh int64 buffer per step
                        X_prev -= s_prev
                        if verify:
                            reconstructed_sums.append(_checksum(X_prev))
                    else:
                        first_block_differs = (X_top - X_cur != code).any()
                grads = torch.autograd.grad(expression, targets, grad_outputs=g_top, allow_unused=True)
                for p, g in zip(block_params, grads[1:], strict=True):
                    param_grads[slot[id(p)]] = g  # includes what the blocks above contributed
                if index > 0:
                    assert grads[0] is not None  # x_leaf enters y_k through (1 - gamma) x_k
                    g_top, g_below = grads[0], table.gamma[index - 1] * g_top
                    X_top, X_cur = X_cur, X_prev
                    if reconstructed is not None:
                        reconstructed.append(X_prev)
                else:
                    g_input = grads[0]
        _raise_mismatch(checks, reconstructed_sums, first_block_differs)
        if reconstructed is not None:
            reconstructed.reverse()
            stack.last_reconstruction = reconstructed
        grad_x = None if g_input is None else g_input.to(ctx.in_dtype)
        return (None, None, grad_x, *param_grads)


def _raise_mismatch(
    checks: Tensor, reconstructed_sums: list[Tensor], first_block_differs: Tensor | None
) -> None:
    """One host sync per backward: every reconstructed checksum and the first block's recomputation."""
    flags = [] if first_block_differs is None else [first_block_differs.reshape(1)]
    if reconstructed_sums:
        # reconstructed_sums runs from X_{K-2} down to X_0; report the highest block that differs
        # (every state below a wrong one is wrong as well)
        flags.insert(0, torch.stack(reconstructed_sums) != checks.flip(0)[: len(reconstructed_sums)])
    if not flags:
        return
    bad = torch.cat(flags)
    if not bool(bad.any()):
        return
    position = int(bad.nonzero()[0, 0])
    index = len(reconstructed_sums) - position if position < len(reconstructed_sums) else 0
    if index == 0:
        what = "block 0 recomputed h_0(x_0) differently in backward (X_1 - X_0 != R(h_0))"
    else:
        what = f"reconstructing X_{index - 1} through block {index} gave a different state than the forward"
    raise BDIAReconstructionError(
        f"BDIAStack: {what}. Blocks must recompute bit-identically: same kernels, dtype/autocast, and "
        "dropout replayed from the saved RNG state (preserve_rng_state=True); no side effects."
    )
