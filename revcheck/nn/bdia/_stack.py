"""The :class:`BDIAStack` module: its arguments, its arithmetic, and the BDIA step, written once.

Every way of running the stack -- eval, the stored training forward, the
reversible forward and :meth:`BDIAStack.trace` -- runs :meth:`BDIAStack._run_blocks`,
which runs :meth:`BDIAStack._step` once per block; the reversible backward
recomputes ``y_k`` with the same :meth:`BDIAStack._residual_value` and ``R`` with
the same :meth:`BDIAStack._rounded_codes`.  Each formula of docs/spec.md §3 is one
method (``_rounded_codes`` for ``R``, ``_mix`` for ``y_k``, ``_side_bits`` for
``s_{k-1}``, ``_draw_gamma_signs`` for the gammas): a subclass that changes one
changes it everywhere, which is how the planted bugs of the test gallery are built.
"""

# ruff: noqa: E741  (``l``, the grid exponent, is the name docs/spec.md §3 and the API contract use)
from __future__ import annotations

import operator
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, SupportsIndex

import torch
from torch import Tensor, nn

from revcheck import bits as _bits
from revcheck import formats
from revcheck.nn.bdia._autograd import Input, ReversibleBDIA, StraightThrough
from revcheck.nn.bdia._bitpack import pack_bits_unchecked, unpack_bits_unchecked
from revcheck.nn.bdia._checksums import checksum
from revcheck.nn.bdia._ranges import RangeFlags, extremes
from revcheck.oracle.bdia import COMPUTE_FORMATS, MAX_L, PAPER_L

__all__ = ["BDIAStack", "BDIAStackTrace", "Step"]

Mode = Literal["reversible", "stored"]
_MODES = ("reversible", "stored")
_COMPUTE_DTYPES: tuple[torch.dtype, ...] = tuple(
    _bits.torch_dtype(formats.get(name)) for name in COMPUTE_FORMATS
)
# What each range check of a block is about (formatted only when one fails).
_H_RANGE = "h_{k}(x_{k}) is not finite or |R(h_{k})| >= 2**62"
_Y_RANGE = "y_{k} is not finite or |R(y_{k})| >= 2**62"
_X_RANGE = "X_{k_next} is outside |X| < 2**62"
# Seeds drawn for seed=None: any non-negative int64 that torch.Generator.manual_seed accepts.
_SEED_BOUND = 2**63 - 1


def _integer(value: object, what: str, requirement: str) -> int:
    """``value`` as an int if it is integer-like (``operator.index``: int, numpy integers, 0-dim integer
    tensors); bools and floats are refused with ``ValueError`` (``True`` is an int in Python, never meant
    as one here)."""
    is_bool = isinstance(value, bool) or (isinstance(value, Tensor) and value.dtype == torch.bool)
    if not is_bool:
        try:
            return operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            pass
    kind = "a bool" if is_bool else type(value).__name__
    hint = "; convert it with int(...) if it is integral" if isinstance(value, float) else ""
    raise ValueError(f"{what} must be an int{requirement}, got {value!r} ({kind}){hint}")


def _default_seed() -> int:
    """A seed for the stack's gamma generator drawn from torch's global (CPU) generator.

    One draw at construction, like the initialisation of ``nn.Linear``: ``torch.manual_seed``
    then fixes the gammas of every stack built after it, while the stack's own generator
    keeps the gamma draws of every forward off the global stream (which dropout replay needs).
    """
    return int(torch.randint(0, _SEED_BOUND, (), dtype=torch.int64))


@dataclass
class BDIAStackTrace:
    """Everything one forward computed (see :meth:`BDIAStack.trace`)."""

    codes: list[Tensor]
    side_bits: list[Tensor]
    block_outputs: list[Tensor]
    gamma_signs: Tensor


@dataclass(frozen=True)
class Coefficients:
    """gamma-dependent factors, shape (K-1, B, 1, ...): compute dtype, then int64 signs and 2 x signs.

    Row ``k - 1`` belongs to block ``k``.
    """

    one_minus: Tensor
    one_plus: Tensor
    gamma: Tensor
    sign: Tensor
    twice_sign: Tensor


class Step(NamedTuple):
    """What :meth:`BDIAStack._step` computed for block k."""

    X_next: Tensor
    """``X_{k+1}`` (int64 codes)."""
    x_next: Tensor
    """``x_{k+1} = X_{k+1} * 2**-l`` in the compute dtype (straight-through graph when grad is enabled)."""
    h: Tensor
    """``h_k(x_k)`` in the compute dtype."""
    side_bits: Tensor | None
    """``s_{k-1} = X_{k-1} mod 2`` (uint8), or None under the first block's rule."""
    packed: Tensor | None = None
    """The side bits packed 8 to a byte (when the step was asked to keep them)."""
    checksum: Tensor | None = None
    """The checksum of ``X_{k-1}`` (when kept and ``verify_reconstruction``)."""


_COMPILE_FAILURES = (torch._dynamo.exc.TorchDynamoException, torch._dynamo.exc.FailOnRecompileLimitHit)


class _CompiledOnce:
    """``torch.compile(function)`` that falls back to ``function`` (with one warning) if compiling fails."""

    def __init__(self, stack: BDIAStack, function: Callable[..., Any]) -> None:
        self.stack = stack
        self.function = function
        self.compiled = torch.compile(function, dynamic=False, fullgraph=True)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.stack._compile_failed:
            return self.function(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except _COMPILE_FAILURES as error:  # tracing or compiling failed, or too many recompilations
            warnings.warn(
                f"BDIAStack(compiled=True): torch.compile failed ({type(error).__name__}: "
                f"{str(error)[:200]}); running the eager code update instead (same bits, slower)",
                RuntimeWarning,
                stacklevel=3,
            )
            self.stack._compile_failed = True
            return self.function(*args, **kwargs)


class BDIAStack(nn.Module):
    """A stack of residual blocks ``x <- x + h_k(x)`` made exactly reversible by BDIA (docs/spec.md §3).

    ``blocks``: modules mapping a tensor of the input's shape (B, ...) to the same
    shape.  ``l``: grid exponent (step ``2**-l``).  ``mode``: ``"reversible"``
    (O(1) activations in depth) or ``"stored"`` (ordinary autograd, same bits).
    ``compute_dtype``: residual dtype, float32 or float64.  ``seed``: seed of the
    stack's own gamma generator; ``None`` (the default) draws it once from torch's global
    generator at construction (``torch.randint`` once), so ``torch.manual_seed(s)`` before
    building the stack makes its gammas reproducible, as it does a layer's initial weights.
    Forward draws the gammas from the stack's own generator and never from the global one
    (dropout, replayed in backward, draws there).  ``l`` and ``seed`` accept any integer-like
    value (``operator.index``: numpy integers too), never bools or floats.  ``quantize=False`` is
    the plain residual stack ``x + h(x)``, allowed only in eval().
    ``preserve_rng_state`` (default True) saves RNG states so dropout is replayed.
    ``verify_reconstruction`` (default True) checks every reconstructed state
    against a checksum taken in the forward (a wrapping int64 sum: one reduction per
    block each way, well under 1% of a training step, compared with one host sync at the
    end of backward), so a non-deterministic block is named instead of silently giving
    wrong gradients.  Without it only the first block's recomputation is checked.
    ``compiled=True`` (opt-in) runs each block's integer code update -- ``y_k`` in the
    no-grad forward, ``R``, the side bits, ``X_{k+1}``, its dequantization, the packing,
    checksums and range extremes, and the reconstruction step of backward -- as
    ``torch.compile``-fused kernels (docs/spec.md D3.15): the same Python code, so the
    same bits (``tests/test_bdia_compiled.py`` checks them against eager), compiled once
    per shape and dtype (seconds); if compilation fails the stack warns once and runs
    eager.  The blocks themselves are not compiled.

    For tests and debugging: ``last_gamma_signs`` holds the (K-1, B) int8 signs of
    the latest training forward; with ``record_reconstruction = True`` a
    reversible backward leaves the codes X_0..X_K it reconstructed in
    ``last_reconstruction``; :meth:`trace` returns every code, side bit and
    block output of one forward.  In ``eval()`` both modes run ordinary autograd
    (gamma = 0 cannot be inverted, so there is nothing to reconstruct from).

    Raises
    ------
    ValueError
        For no blocks, ``l`` outside ``0 .. MAX_L`` (:data:`revcheck.oracle.bdia.MAX_L`),
        an ``l`` or ``seed`` that is not an integer (a bool, a float), an unsupported
        ``compute_dtype`` or ``mode``.
    TypeError
        For a block that is not a ``torch.nn.Module``.
    """

    def __init__(
        self,
        blocks: Sequence[nn.Module],
        *,
        l: SupportsIndex = PAPER_L,
        mode: Mode = "reversible",
        compute_dtype: torch.dtype = _COMPUTE_DTYPES[0],
        seed: SupportsIndex | None = None,
        quantize: bool = True,
        preserve_rng_state: bool = True,
        verify_reconstruction: bool = True,
        compiled: bool = False,
    ) -> None:
        super().__init__()
        blocks = list(blocks)
        if not blocks:
            raise ValueError("BDIAStack needs at least one block")
        for index, block in enumerate(blocks):
            if not isinstance(block, nn.Module):
                raise TypeError(f"block {index} is a {type(block).__name__}; blocks must be torch.nn.Module")
        l = _integer(l, "l", f" with 0 <= l <= {MAX_L}")
        if not 0 <= l <= MAX_L:
            raise ValueError(f"l must be an int with 0 <= l <= {MAX_L}, got {l!r}")
        if compute_dtype not in _COMPUTE_DTYPES:
            raise ValueError(
                f"compute_dtype must be {' or '.join(map(str, _COMPUTE_DTYPES))}, got {compute_dtype}; run "
                "low-precision blocks by giving them that dtype (or autocast); the residual stays fp32/fp64"
            )
        self.blocks = nn.ModuleList(blocks)
        self.l = l
        self.mode = mode
        self.compute_dtype = compute_dtype
        self.quantize = quantize
        self.preserve_rng_state = preserve_rng_state
        self.verify_reconstruction = verify_reconstruction
        self.compiled = bool(compiled)
        self._compiled: dict[str, _CompiledOnce] = {}
        self._compile_failed = False
        seed = _default_seed() if seed is None else _integer(seed, "seed", " (or None)")
        self.seed = seed
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.last_gamma_signs: Tensor | None = None
        self.record_reconstruction = False
        self.last_reconstruction: list[Tensor] | None = None
        self._check_mode()

    def __getstate__(self) -> dict[str, Any]:
        # Compiled code updates are per process (and not picklable): a copy compiles its own.
        state = super().__getstate__()
        state["_compiled"] = {}
        return state

    # ------------------------------------------------------------ arithmetic: one method per formula

    def _rounded_codes(self, values: Tensor) -> Tensor:
        """``R(values) = round_half_even(values * 2**l)``, still floating point (NaN and range visible)."""
        scaled = torch.mul(values, float(2**self.l))  # exact: power-of-two scaling in fp32/fp64
        return scaled.round_()  # round half to even, in place (one buffer)

    def _quantize_codes(self, values: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``(R(values), extremes)``: int64 codes and the (min, max) of the rounded values (no graph)."""
        rounded = self._rounded_codes(values.detach())
        return rounded.to(torch.int64), extremes(rounded)  # NaN propagates into the extremes

    def _dequantize(self, codes: Tensor) -> Tensor:
        """``x = X * 2**-l``, rounded once to the compute dtype."""
        return codes.to(self.compute_dtype).mul_(2.0**-self.l)

    def _mix(self, x: Tensor, h: Tensor, one_minus: Tensor, one_plus: Tensor) -> Tensor:
        """``y = fl(fl((1-gamma) x) + fl((1+gamma) h))``: separate kernels, no fused multiply-add."""
        t1 = one_minus * x
        t2 = one_plus * h
        return t1 + t2

    def _side_bits(self, X_prev: Tensor, X_cur: Tensor) -> Tensor:
        """``s_{k-1} = X_{k-1} mod 2`` (uint8 zeros and ones: the low byte of the two's complement, & 1)."""
        return X_prev.to(torch.uint8).bitwise_and_(1)

    def _draw_gamma_signs(self, count: int, batch: int) -> Tensor:
        """Signs of gamma_1..gamma_{K-1} per sample, int8 (count, batch), from the stack's own generator."""
        bits = torch.randint(0, 2, (count, batch), generator=self.generator, dtype=torch.int8)
        return bits * 2 - 1

    def _coefficient_table(self, signs: Tensor, ndim: int, device: torch.device) -> Coefficients:
        """Per-block coefficients of all K-1 gamma rows at once (row ``k - 1`` belongs to block ``k``)."""
        shape = (*signs.shape, *(1,) * (ndim - 1))
        gamma = signs.reshape(-1).to(device=device, dtype=self.compute_dtype).reshape(shape) * 0.5
        sign = signs.to(device=device, dtype=torch.int64).reshape(shape)
        return Coefficients(1.0 - gamma, 1.0 + gamma, gamma, sign, sign * 2)

    # ------------------------------------------------------------------ blocks

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

    # ------------------------------------------------------------------ the step, written once

    # "The first block's rule", X_{k+1} = X_k + R(h_k(x_k)), holds for block 0 and, at gamma = 0
    # (eval: no coefficient table), for every block; below it is the test ``table is None or index == 0``.

    def _residual_value(self, index: int, x: Tensor, h: Tensor, table: Coefficients | None) -> Tensor:
        """What ``R`` quantizes in block ``index``: ``h_k(x_k)`` under the first block's rule, else ``y_k``.

        The forward's :meth:`_step` and the reversible backward both take it from here.
        """
        if table is None or index == 0:
            return h
        row = index - 1
        return self._mix(x, h, table.one_minus[row], table.one_plus[row])

    def _step(
        self,
        index: int,
        X_prev: Tensor,
        X_cur: Tensor,
        x_prev: Tensor,
        x_cur: Tensor,
        table: Coefficients | None,
        flags: RangeFlags,
        dtype: torch.dtype | None = None,
        keep: bool = False,
    ) -> Step:
        """Block ``index`` of docs/spec.md §3 in every mode: ``X_{k+1}`` from ``X_{k-1}``, ``X_k``.

        ``X_prev``/``x_prev`` are unused under the first block's rule (block 0 gets
        ``X_0``/``x_0`` there).  ``table``: the gamma coefficients, None for gamma = 0.
        With grad enabled, ``x_{k+1}`` carries the straight-through gradient to the
        unquantized ``x_k + h_k`` (first rule) or ``gamma_k x_{k-1} + y_k``.  The two
        range flags of the block go to ``flags``.  ``dtype``: the block's dtype if
        already known.  ``keep``: also pack the side bits and checksum ``X_{k-1}``.
        """
        h = self._block_output(index, x_cur, dtype)
        first_rule = table is None or index == 0
        codes = self._fused("next", self._next_codes)
        if first_rule:
            value = h
            X_next, x_value, side, packed, check, value_range, state_range = codes(
                h.detach(), X_prev, X_cur, keep
            )
        else:
            assert table is not None
            row = index - 1
            sign, one_minus, one_plus = table.sign[row], table.one_minus[row], table.one_plus[row]
            if torch.is_grad_enabled():
                value = self._residual_value(index, x_cur, h, table)  # y_k with its graph
                X_next, x_value, side, packed, check, value_range, state_range = codes(
                    value.detach(), X_prev, X_cur, keep, sign=sign
                )
            else:  # y_k is formed inside the code update (fused there with compiled=True)
                X_next, x_value, side, packed, check, value_range, state_range = codes(
                    h, X_prev, X_cur, keep, x_cur, one_minus, one_plus, sign
                )
        flags.add(index, _H_RANGE if first_rule else _Y_RANGE, value_range)
        flags.add(index, _X_RANGE, state_range)
        if not torch.is_grad_enabled():
            x_next = x_value
        elif first_rule:
            x_next = StraightThrough.apply(x_cur + h, X_next, self)
        else:
            x_next = StraightThrough.apply(table.gamma[index - 1] * x_prev + value, X_next, self)  # type: ignore[union-attr]
        return Step(X_next, x_next, h, side, packed, check)

    def _next_codes(
        self,
        h: Tensor,
        X_prev: Tensor,
        X_cur: Tensor,
        keep: bool,
        x: Tensor | None = None,
        one_minus: Tensor | None = None,
        one_plus: Tensor | None = None,
        sign: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None, Any, Any]:
        """The forward step after the block, a pure function of its tensors (no graph).

        ``R`` quantizes ``h`` itself, or with ``x`` given ``y = _mix(x, h, one_minus, one_plus)``;
        ``sign``: the gamma signs (B, 1, ...) as int64, None under the first block's rule.
        Returns ``X_{k+1}``, ``x_{k+1}`` (dequantized), the side bits ``s_{k-1}``, with ``keep``
        also the packed side bits and the checksum of ``X_{k-1}`` (what the reversible forward
        saves), and the extremes of ``R(·)`` and of ``X_{k+1}``.
        """
        value = h if x is None else self._mix(x, h, one_minus, one_plus)  # type: ignore[arg-type]
        code, value_range = self._quantize_codes(value)
        side = packed = check = None
        if sign is None:
            X_next = X_cur + code
        else:
            side = self._side_bits(X_prev, X_cur)
            # gamma (X_{k-1} + s_{k-1}) as sign * ((X + s) >> 1): exact, |half| <= 2**61
            X_next = X_prev + side
            X_next >>= 1  # in place: one fresh int64 buffer per step
            X_next *= sign
            X_next += code
            if keep:
                packed = pack_bits_unchecked(side)
                check = checksum(X_prev) if self.verify_reconstruction else None
        return X_next, self._dequantize(X_next), side, packed, check, value_range, extremes(X_next)

    def _previous_codes(
        self, value: Tensor, X_next: Tensor, packed: Tensor, twice_sign: Tensor, verify: bool
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """The integer part of a reconstruction step (no graph): ``X_{k-1}``, ``x_{k-1}``, its checksum.

        ``X_{k-1} = (X_{k+1} − R(y_k)) / gamma_k − s_{k-1}``; ``1/gamma = 2 sign`` is exact in int64.
        """
        code = self._rounded_codes(value).to(torch.int64)
        s_prev = unpack_bits_unchecked(packed, X_next.shape)
        X_prev = X_next - code
        X_prev *= twice_sign  # in place: one fresh int64 buffer per step
        X_prev -= s_prev
        return X_prev, self._dequantize(X_prev), checksum(X_prev) if verify else None

    def _fused(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function`` itself, or with ``compiled=True`` its ``torch.compile`` (made once per stack).

        The compiled version runs the same Python code (so every override of a formula method is
        compiled in too); integer arithmetic is exact in any kernel, and the float operations
        (scaling by powers of two, rounding half to even, int64 <-> float conversions) are single
        correctly rounded operations that inductor emits as such (no fast-math, no contraction).
        If compilation fails, the stack warns once and stays eager.
        """
        if not self.compiled or self._compile_failed:
            return function
        fused = self._compiled.get(name)
        if fused is None:
            fused = self._compiled[name] = _CompiledOnce(self, function)
        return fused

    def _run_blocks(
        self,
        x: Tensor,
        table: Coefficients | None,
        *,
        dtypes: Sequence[torch.dtype] | None = None,
        before_block: Callable[[int], None] | None = None,
        after_step: Callable[[int, Tensor, Tensor, Step], None] | None = None,
        keep: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Quantize ``x`` and run every block once; returns ``(x_K, X_K, X_{K-1})`` (``X_0`` for K = 1).

        ``table``: gamma coefficients (None: gamma = 0, eval).  ``before_block(k)``
        runs before block k (the reversible forward captures RNG states there);
        ``after_step(k, X_{k-1}, X_k, step)`` after it (``X_{k-1}`` is ``X_0`` for
        k = 0).  ``keep``: every step packs its side bits and checksums ``X_{k-1}``
        (:class:`Step`).  Raises :class:`~revcheck.nn.BDIARangeError` at the end for the
        first value that cannot be reconstructed.
        """
        flags = RangeFlags()
        X_cur, input_range = self._input_codes(x)
        flags.add(-1, "the input x_0 is not finite or too large", input_range)
        x_cur = Input.apply(x, X_cur, self) if torch.is_grad_enabled() else self._dequantize(X_cur)
        X_prev, x_prev = X_cur, x_cur  # unused by block 0
        for index in range(len(self.blocks)):
            if before_block is not None:
                before_block(index)
            dtype = None if dtypes is None else dtypes[index]
            step = self._step(index, X_prev, X_cur, x_prev, x_cur, table, flags, dtype, keep)
            if after_step is not None:
                after_step(index, X_prev, X_cur, step)
            X_prev, X_cur, x_prev, x_cur = X_cur, step.X_next, x_cur, step.x_next
            del step  # the block output is not kept
        flags.raise_first()
        return x_cur, X_cur, X_prev

    # ------------------------------------------------------------------ argument checks

    def _input_codes(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        # exact widening; fp16 * 2**l could overflow
        wide = x if x.dtype == torch.float64 else x.to(torch.float32)
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
            if not self.quantize:
                state = x.to(self.compute_dtype)
                for index in range(len(self.blocks)):
                    state = state + self._block_output(index, state)
                return state
            return self._run_blocks(x, None)[0]
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
            # ordinary autograd through every step (without grad: the same steps, no graph)
            return self._run_blocks(x, self._coefficient_table(signs, x.dim(), x.device))[0]
        return ReversibleBDIA.apply(self, signs, x, *params)

    @torch.no_grad()
    def trace(self, x: Tensor, *, gamma_signs: Tensor | None = None) -> BDIAStackTrace:
        """Run the training-mode forward arithmetic keeping every code, side bit and block output.

        For tests and debugging (it keeps O(K) tensors).  Uses and advances the
        gamma generator and the global RNG exactly as :meth:`forward` does.
        """
        self._check_input(x)
        signs = self._gamma_signs(x, gamma_signs)
        codes: list[Tensor] = []
        bits: list[Tensor] = []
        outputs: list[Tensor] = []

        def keep(index: int, X_prev: Tensor, X_cur: Tensor, step: Step) -> None:
            if index == 0:
                codes.append(X_cur)
            codes.append(step.X_next)
            if step.side_bits is not None:
                bits.append(step.side_bits.to(torch.uint8))
            outputs.append(step.h)

        self._run_blocks(x, self._coefficient_table(signs, x.dim(), x.device), after_step=keep)
        return BDIAStackTrace(codes, bits, outputs, signs)

    def extra_repr(self) -> str:
        return (
            f"depth={len(self.blocks)}, l={self.l}, mode={self.mode!r}, compute_dtype={self.compute_dtype}, "
            f"quantize={self.quantize}"
        )
