"""The PAM kernel suite, written once and run over implementations (docs/spec.md §2).

Every implementation of the PAM kernels (torch's :mod:`revcheck.kernels.pam`,
Triton's :mod:`revcheck.kernels.triton_pam`, and any a user registers) must
equal the NumPy oracle bit for bit (level K on the device it runs on, against
level O): element-wise operations in every format and both modes, on every
input class (NaN payloads, ±inf, ±0, subnormals, normals at the exponent
boundaries), NaN bits compared too (a computed NaN is canonical); the matrix
product in the sequential order bit for bit, other orders within the oracle's
rigorous bound (level B).

Three layers, as in array-api-tests:

* :class:`PamKernels`, the implementation under test: the op functions by name,
  resolved lazily from ``"module:function"`` references (importing triton is
  optional and slow), with :meth:`PamKernels.replace` for planted bugs;
* assertion helpers (:func:`assert_op_equals_oracle`,
  :func:`assert_matmul_equals_oracle`) that call the implementation and the
  oracle on the same bit patterns and print the evidence;
* check bodies ``check_*(data, kernels, ...)`` (Hypothesis draws) and
  ``check_*(kernels, ...)`` (counted cases), which the suites
  (:class:`ElementwiseSuite`, :class:`MatmulSuite`) and the planted-bug
  galleries (tests/gallery/pam_*_mutants.py) both call.

A thin test module instantiates the suites for its implementations by giving a
``kernels`` fixture: properties/test_pam_kernels.py (torch and every other
registered implementation), properties/triton/test_pam_triton.py (Triton).
Random draws are joined by TestFloat-style counted cases
(:func:`revcheck.strategies.testfloat_pairs`, level 1: every corner pair of every
format, in both modes, deterministically), so that every class is reached in
every format on its own.

Registering an implementation
-----------------------------
A module with functions named after the ops (``pam_mul(a, b, *, mode)``, ...,
``pam_matmul(A, B, *, mode[, order])``) is registered in the audit's op registry
(``revcheck.audit.ops_pam.IMPLEMENTATIONS``, ``name -> module``): the audit, the
sweep and properties/test_pam_kernels.py then all run it.  To run the suites on
kernels without registering them, give the fixture in your own test module::

    @pytest.fixture(scope="module")
    def kernels() -> PamKernels:
        return PamKernels.from_module("mine", "mypackage.kernels")

    class TestMyKernels(ElementwiseSuite, MatmulSuite):
        pass
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from revcheck import bits, formats
from revcheck import strategies as rst
from revcheck.formats import FloatFormat
from revcheck.kernels import pam as torch_kernels
from revcheck.modes import MODES
from revcheck.oracle import pam as oracle
from revcheck.testing import assert_bit_exact

__all__ = [
    "BINARY_OPS",
    "OPS",
    "UNARY_OPS",
    "BoundViolationError",
    "ElementwiseSuite",
    "MatmulSuite",
    "PamKernels",
    "registered_kernels",
]

BINARY_OPS = ("pam_mul", "pam_div", "pam_mul_grad")
UNARY_OPS = ("pa_log2", "pa_exp2")
OPS = (*BINARY_OPS, *UNARY_OPS, "pam_matmul")
FORMAT_NAMES = formats.names()
FP8 = tuple(name for name in FORMAT_NAMES if formats.get(name).width == 8)
# Formats whose accumulator is wider than themselves (fp16, bf16, fp8): their subnormals survive widening.
NARROW_FORMATS = tuple(
    name for name in FORMAT_NAMES if oracle.accumulator_format(formats.get(name)) is not formats.get(name)
)

shapes = hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=6)


class BoundViolationError(AssertionError):
    """A matrix product summed in another order lies outside the oracle's rigorous error bound."""


# ---- the implementation under test --------------------------------------------------------------


@dataclass(frozen=True)
class PamKernels:
    """One implementation of the PAM kernels: op name -> function (or ``"module:function"``, resolved lazily).

    ``orders`` are the summation orders its ``pam_matmul`` takes as ``order=``
    (None: the module's ``ORDERS`` if its ``pam_matmul`` has an ``order``
    parameter, else only the sequential order, taken without the keyword).
    ``setup`` runs before a reference is imported (Triton's interpreter must
    be chosen before triton is first imported); it may skip.
    """

    name: str
    functions: Mapping[str, Callable[..., Any] | str]
    orders: tuple[str, ...] | None = None
    setup: Callable[[], None] | None = field(default=None, compare=False)

    @classmethod
    def from_module(
        cls,
        name: str,
        module: str,
        *,
        orders: tuple[str, ...] | None = None,
        setup: Callable[[], None] | None = None,
    ) -> PamKernels:
        """The functions called after the ops (:data:`OPS`) in ``module``."""
        return cls(name, {op: f"{module}:{op}" for op in OPS}, orders, setup)

    def replace(self, **functions: Callable[..., Any] | str) -> PamKernels:
        """A copy with some ops replaced (a planted bug replaces one); names it ``"<name> with <ops>"``."""
        unknown = sorted(set(functions) - set(OPS))
        if unknown:
            raise ValueError(f"unknown ops {unknown}; PAM kernels have {', '.join(OPS)}")
        return dataclasses.replace(
            self, name=f"{self.name} with {', '.join(functions)}", functions={**self.functions, **functions}
        )

    def has(self, op: str) -> bool:
        """Whether this implementation has ``op`` (a reference's module is imported to find out)."""
        function = self.functions.get(op)
        if not isinstance(function, str):
            return function is not None
        module_name, _, attribute = function.partition(":")
        self._prepare()
        return hasattr(importlib.import_module(module_name), attribute)

    def _prepare(self) -> None:
        if self.setup is not None:
            self.setup()

    def function(self, op: str) -> Callable[..., Any]:
        """The function of ``op``, imported now if it is a reference."""
        try:
            function = self.functions[op]
        except KeyError:
            raise LookupError(f"{self.name} has no {op}; it implements {', '.join(self.functions)}") from None
        if not isinstance(function, str):
            return function
        self._prepare()
        module_name, _, attribute = function.partition(":")
        return getattr(importlib.import_module(module_name), attribute)  # type: ignore[no-any-return]

    def matmul_orders(self) -> tuple[str, ...]:
        """The orders :meth:`matmul` accepts: ``("sequential",)`` at least."""
        if self.orders is not None:
            return self.orders
        matmul = self.function("pam_matmul")
        if "order" not in inspect.signature(matmul).parameters:
            return ("sequential",)
        return tuple(getattr(inspect.getmodule(matmul), "ORDERS", ("sequential",)))

    def matmul(
        self, a: torch.Tensor, b: torch.Tensor, *, mode: str, order: str = "sequential", fmt: object = None
    ) -> torch.Tensor:
        """``pam_matmul(a, b, mode=mode)``, with ``order=`` only for another order than the sequential one
        and ``fmt=`` only for the formats without a torch dtype (uint8 bit patterns, docs/spec.md D1.10)."""
        keywords = _pattern_keywords(fmt)
        if order == "sequential":
            return self.function("pam_matmul")(a, b, mode=mode, **keywords)  # type: ignore[no-any-return]
        return self.function("pam_matmul")(  # type: ignore[no-any-return]
            a, b, mode=mode, order=order, **keywords
        )

    def formats_of(self, op: str) -> tuple[str, ...]:
        """The formats ``op`` takes here: fp6/fp4 (uint8 patterns with ``fmt=``) only if it takes ``fmt``."""
        from revcheck.audit.arguments import accepts_keyword

        takes_fmt = accepts_keyword(self.function(op), "fmt")
        return tuple(name for name in FORMAT_NAMES if takes_fmt or formats.get(name).torch_dtype_name)

    def __repr__(self) -> str:
        return f"PamKernels({self.name!r})"


def _pattern_keywords(fmt: object) -> dict[str, Any]:
    """``fmt=`` for a format without a torch dtype, whose tensors are uint8 bit patterns (D1.10)."""
    if fmt is None or formats.get(fmt).torch_dtype_name is not None:
        return {}
    return {"fmt": formats.get(fmt).name}


def _skip_unless_takes(kernels: PamKernels, op: str, fmt_name: str) -> None:
    if fmt_name not in kernels.formats_of(op):
        pytest.skip(f"{kernels.name}.{op} takes no fmt= keyword: {fmt_name} (uint8 bit patterns) not checked")


def use_triton_interpreter_without_cuda() -> None:
    """Choose Triton's CPU interpreter where there is no CUDA (before triton's import); skip if too late."""
    if torch.cuda.is_available():
        return
    os.environ.setdefault("TRITON_INTERPRET", "1")
    triton_pam = importlib.import_module("revcheck.kernels.triton_pam")
    if not triton_pam.INTERPRETED:
        pytest.skip("Triton on the CPU needs TRITON_INTERPRET=1 set before triton is first imported")


TORCH = PamKernels.from_module("torch", "revcheck.kernels.pam", orders=torch_kernels.ORDERS)
TRITON = PamKernels.from_module(
    "triton", "revcheck.kernels.triton_pam", orders=("sequential",), setup=use_triton_interpreter_without_cuda
)
# Implementations whose suite runs from a directory named after their optional dependency.
OWN_DIRECTORY = {"triton": "properties/triton/"}
_KNOWN = {"torch": TORCH, "triton": TRITON}


def registered_kernels() -> list[PamKernels]:
    """Every implementation of the elementwise PAM ops in the audit's op registry, as :class:`PamKernels`.

    Each one's ``pam_matmul`` is the function of that name in the module of its ``pam_mul``.
    """
    from revcheck.audit import registry

    specs = [registry.get(op) for op in (*BINARY_OPS, *UNARY_OPS)]
    names = dict.fromkeys(name for spec in specs for name in spec.implementations)
    found = []
    for name in names:
        if name in _KNOWN:
            found.append(_KNOWN[name])
            continue
        functions: dict[str, Callable[..., Any] | str] = {
            spec.name: spec.implementations[name] for spec in specs if name in spec.implementations
        }
        if "pam_mul" in functions:
            functions["pam_matmul"] = f"{str(functions['pam_mul']).partition(':')[0]}:pam_matmul"
        found.append(PamKernels(name, functions))
    return found


def loaded(kernels: PamKernels) -> PamKernels:
    """``kernels`` once its first op imports; one that needs a missing dependency skips, with the reason."""
    try:
        kernels.function(next(iter(kernels.functions)))
    except ModuleNotFoundError as error:
        pytest.skip(f"{kernels.name} cannot be imported: {error}")
    return kernels


def _require(kernels: PamKernels, op: str) -> None:
    if not kernels.has(op):
        pytest.skip(f"{kernels.name} has no {op}")


# ---- assertion helpers ------------------------------------------------------------------------------


def assert_op_equals_oracle(
    kernels: PamKernels,
    op: str,
    operands: Sequence[np.ndarray],
    fmt: FloatFormat,
    *,
    mode: str,
    device: str,
    what: str = "",
) -> None:
    """``kernels``' ``op`` on ``operands`` (bit patterns of ``fmt``, tensors on ``device``) equals the oracle.

    Bit for bit, NaN bits too.  Raises :class:`~revcheck.testing.BitMismatchError`
    naming the implementation, the op, the mode and ``what`` the operands are.
    """
    __tracebackhide__ = True
    tensors = [bits.to_torch(x, fmt, device) for x in operands]
    actual = kernels.function(op)(*tensors, mode=mode, **_pattern_keywords(fmt))
    expected = getattr(oracle, op)(*operands, fmt, mode=mode)
    arguments = ", ".join("ab"[: len(operands)]) if len(operands) > 1 else "x"
    suffix = f" on {what}" if what else ""
    message = f"{kernels.name}: {op}({arguments}, mode={mode!r}) vs oracle{suffix}"
    assert_bit_exact(actual, expected, fmt=fmt, nan="bits", msg=message)


def assert_matmul_equals_oracle(
    kernels: PamKernels,
    a_bits: np.ndarray,
    b_bits: np.ndarray,
    fmt: FloatFormat,
    *,
    mode: str,
    device: str,
    what: str = "",
) -> None:
    """``kernels``' ``pam_matmul`` of the bit patterns equals the oracle's sequential sum, NaN bits too."""
    __tracebackhide__ = True
    actual = kernels.matmul(
        bits.to_torch(a_bits, fmt, device), bits.to_torch(b_bits, fmt, device), mode=mode, fmt=fmt
    )
    expected = oracle.pam_matmul(a_bits, b_bits, fmt, mode=mode)
    suffix = f" on {what}" if what else ""
    assert_bit_exact(
        actual,
        expected,
        fmt=oracle.accumulator_format(fmt),
        nan="bits",
        msg=f"{kernels.name}: pam_matmul(A, B, mode={mode!r}) vs oracle (sequential order){suffix}",
    )


# ---- element-wise checks -------------------------------------------------------------------------------


def _format_and_mode(data: st.DataObject, kernels: PamKernels, op: str) -> tuple[FloatFormat, str]:
    fmt = data.draw(rst.formats(names=kernels.formats_of(op)), label="format")
    return fmt, data.draw(st.sampled_from(MODES), label="mode")


def _with_counted_first(data: st.DataObject, arrays: Sequence[np.ndarray], fmt: FloatFormat) -> None:
    """Put a TestFloat counted case (a pair for two arrays) in the first element of the arrays, in place.

    Counted cases shrink towards the first ones (±0, ±1, ±2, ±0.5, ...), and the
    first examples Hypothesis tries are near the simplest: corners such as
    log2(1) = +0 are reached early instead of by luck.
    """
    if len(arrays) == 1:
        case = data.draw(rst.testfloat_cases(fmt).strategy(), label="first element (counted case)")
        arrays[0].flat[0] = case.bits
    else:
        a, b = data.draw(rst.testfloat_pairs(fmt).strategy(), label="first elements (counted pair)")
        arrays[0].flat[0], arrays[1].flat[0] = a.bits, b.bits


def check_binary_op_equals_oracle(
    data: st.DataObject, kernels: PamKernels, *, op: str, device: str = "cpu"
) -> None:
    """Arrays of any shape and every value class, their first elements a counted TestFloat pair."""
    fmt, mode = _format_and_mode(data, kernels, op)
    shape = data.draw(shapes, label="shape")
    a_bits = data.draw(rst.bit_arrays(fmt, shape), label="a bits")
    b_bits = data.draw(rst.bit_arrays(fmt, shape), label="b bits")
    _with_counted_first(data, (a_bits, b_bits), fmt)
    assert_op_equals_oracle(kernels, op, (a_bits, b_bits), fmt, mode=mode, device=device)


def check_binary_op_broadcasts_like_oracle(
    data: st.DataObject, kernels: PamKernels, *, op: str, device: str = "cpu"
) -> None:
    """A column (rows, 1) against a row (cols,): the result is (rows, cols), as NumPy broadcasts."""
    fmt, mode = _format_and_mode(data, kernels, op)
    rows = data.draw(st.integers(1, 4), label="rows")
    cols = data.draw(st.integers(1, 4), label="cols")
    a_bits = data.draw(rst.bit_arrays(fmt, (rows, 1)), label="a bits (column)")
    b_bits = data.draw(rst.bit_arrays(fmt, (cols,)), label="b bits (row)")
    assert_op_equals_oracle(kernels, op, (a_bits, b_bits), fmt, mode=mode, device=device, what="a broadcast")


def check_op_on_regular_operands_equals_oracle(
    data: st.DataObject, kernels: PamKernels, *, op: str, device: str = "cpu"
) -> None:
    """Arrays of ±0 and normal values near 1: the torch kernels' integer fast path; it must agree too."""
    fmt, mode = _format_and_mode(data, kernels, op)
    size = data.draw(st.integers(1, 16), label="size")
    elements = st.one_of(rst.normals_near_one(fmt, binades=3), st.sampled_from([0, fmt.sign_mask]))
    a_bits = data.draw(rst.bit_arrays(fmt, size, elements=elements, fill=st.nothing()), label="a bits")
    b_bits = data.draw(rst.bit_arrays(fmt, size, elements=elements, fill=st.nothing()), label="b bits")
    assert_op_equals_oracle(
        kernels, op, (a_bits, b_bits), fmt, mode=mode, device=device, what="±0 and normals near 1"
    )


def check_unary_op_equals_oracle(
    data: st.DataObject, kernels: PamKernels, *, op: str, device: str = "cpu"
) -> None:
    """Arrays of any shape and every value class, their first element a counted TestFloat case."""
    fmt, mode = _format_and_mode(data, kernels, op)
    x_bits = data.draw(rst.bit_arrays(fmt, data.draw(shapes, label="shape")), label="x bits")
    _with_counted_first(data, (x_bits,), fmt)
    assert_op_equals_oracle(kernels, op, (x_bits,), fmt, mode=mode, device=device)


def check_unary_op_near_one_equals_oracle(
    data: st.DataObject, kernels: PamKernels, *, op: str, device: str = "cpu"
) -> None:
    """Arguments within 2^±6 of 1, where pa_exp2/pa_log2 results carry every fraction bit."""
    fmt, mode = _format_and_mode(data, kernels, op)
    size = data.draw(st.integers(1, 16), label="size")
    elements = rst.normals_near_one(fmt, binades=6)
    x_bits = data.draw(rst.bit_arrays(fmt, size, elements=elements, fill=st.nothing()), label="x bits")
    assert_op_equals_oracle(kernels, op, (x_bits,), fmt, mode=mode, device=device, what="normals near 1")


def check_binary_op_on_counted_pairs(
    kernels: PamKernels, *, op: str, fmt_name: str | None = None, device: str = "cpu"
) -> None:
    """Every TestFloat level-1 pair (:func:`revcheck.strategies.testfloat_pairs`) of ``fmt_name`` (None: of
    every format), in both modes: ±0, the smallest and largest subnormal and normal, ±1, ±1.5, the rows
    at ±p and ±(p+1) and the overflow edge, ±inf and NaN, each paired with each.  Deterministic: no draw
    can miss a pair."""
    if fmt_name is not None:
        _skip_unless_takes(kernels, op, fmt_name)
    for name in kernels.formats_of(op) if fmt_name is None else (fmt_name,):
        pairs = rst.testfloat_pairs(name)
        a_bits, b_bits = pairs.bits()
        for mode in MODES:
            assert_op_equals_oracle(
                kernels, op, (a_bits, b_bits), pairs.first.fmt, mode=mode, device=device, what=repr(pairs)
            )


def check_unary_op_on_counted_cases(
    kernels: PamKernels, *, op: str, fmt_name: str | None = None, device: str = "cpu"
) -> None:
    """Every TestFloat level-1 case (:func:`revcheck.strategies.testfloat_cases`) of ``fmt_name`` (None: of
    every format), in both modes."""
    if fmt_name is not None:
        _skip_unless_takes(kernels, op, fmt_name)
    for name in kernels.formats_of(op) if fmt_name is None else (fmt_name,):
        cases = rst.testfloat_cases(name)
        for mode in MODES:
            assert_op_equals_oracle(
                kernels, op, (cases.bits(),), cases.fmt, mode=mode, device=device, what=repr(cases)
            )


def check_exhaustive_fp8(kernels: PamKernels, *, op: str, device: str = "cpu") -> None:
    """Every input of every 8-bit format (all 65 536 pairs for a binary op), both modes."""
    everything = np.arange(256, dtype=np.uint8)
    operands = [np.repeat(everything, 256), np.tile(everything, 256)] if op in BINARY_OPS else [everything]
    for name in FP8:
        for mode in MODES:
            assert_op_equals_oracle(
                kernels, op, operands, formats.get(name), mode=mode, device=device, what=f"all {name} inputs"
            )


# ---- matrix-product checks -------------------------------------------------------------------------------


def spread_normal_arrays(fmt: FloatFormat, shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
    """Normal values within 2**±12 of 1 (narrower where the format is), random sign and significand.

    Products are finite and their exponents differ, so partial sums need rounding
    even for fp8/fp16 inputs: the summation order shows in the last bits.  The
    significands come from a seeded generator: Hypothesis' own integers favour
    boundary values (0, all ones), whose short sums are exact in any order.
    """
    spread = min(12, fmt.emax - 1, -fmt.emin)

    def generate(seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        size = int(np.prod(shape))
        negative = rng.integers(0, 2, size, dtype=np.uint64) << np.uint64(fmt.width - 1)
        exponent = rng.integers(fmt.bias - spread, fmt.bias + spread + 1, size).astype(np.uint64)
        significand = rng.integers(0, fmt.mantissa_mask, size, dtype=np.uint64, endpoint=True)
        patterns = negative | exponent << np.uint64(fmt.mantissa_bits) | significand
        return patterns.astype(fmt.uint_dtype).reshape(shape)

    return st.integers(0, 2**32 - 1).map(generate)


OPERAND_KINDS = (
    "every class",
    "spread normals (seeded)",
    "normals within 2^±2p of 1",
    "subnormals times normals",
)


def _operand_arrays(
    fmt: FloatFormat, kind: str, role: str
) -> Callable[[tuple[int, ...]], st.SearchStrategy[np.ndarray]]:
    """Arrays of one operand kind; ``role`` is "A" or "B" (the kind may treat them differently)."""
    if kind == "spread normals (seeded)":
        return lambda shape: spread_normal_arrays(fmt, shape)
    if kind == "normals within 2^±2p of 1":
        near_one = rst.normals_near_one(fmt, binades=2 * fmt.precision)
        return lambda shape: rst.bit_arrays(fmt, shape, elements=near_one, fill=st.nothing())
    if kind == "subnormals times normals":
        # Every product and partial sum is tiny: where "ftz" flushes inputs, products and sums.
        classes = ("subnormal",) if role == "A" else ("normal",)
        return lambda shape: rst.bit_arrays(fmt, shape, classes=classes)
    return lambda shape: rst.bit_arrays(fmt, shape)


@st.composite
def matmul_operands(
    draw: st.DrawFn, kinds: Sequence[str] = OPERAND_KINDS, names: Sequence[str] = FORMAT_NAMES
) -> tuple[FloatFormat, np.ndarray, np.ndarray]:
    """(fmt, A bits, B bits): A (*batch, M, K), B (*batch of B, K, N), batches that broadcast, K up to 8."""
    fmt = draw(rst.formats(names=names), label="format")
    batch = draw(st.sampled_from([(), (2,), (1, 2), (2, 1)]), label="batch shape of A")
    b_batch = draw(st.sampled_from([(), batch[-1:]]), label="batch shape of B (broadcast against A's)")
    m = draw(st.integers(1, 4), label="M")
    # K = 0 (the empty sum, +0) is drawn too, but is not the simplest example: early examples (near the
    # simplest) should sum something.
    k = draw(st.one_of(st.integers(1, 8), st.just(0)), label="K")
    n = draw(st.integers(1, 4), label="N")
    kind = draw(st.sampled_from(kinds), label="operand kind")
    a_bits = draw(_operand_arrays(fmt, kind, "A")((*batch, m, k)), label="A bits")
    b_bits = draw(_operand_arrays(fmt, kind, "B")((*b_batch, k, n)), label="B bits")
    return fmt, a_bits, b_bits


def check_matmul_equals_oracle(data: st.DataObject, kernels: PamKernels, *, device: str = "cpu") -> None:
    """Sequential order, every format and mode, batched shapes that broadcast."""
    mode = data.draw(st.sampled_from(MODES), label="mode")
    fmt, a_bits, b_bits = data.draw(matmul_operands(names=kernels.formats_of("pam_matmul")), label="operands")
    assert_matmul_equals_oracle(kernels, a_bits, b_bits, fmt, mode=mode, device=device)


def check_sequential_order_is_kept_where_order_changes_the_result(
    data: st.DataObject, kernels: PamKernels, *, device: str = "cpu"
) -> None:
    """Sums of 4 to 12 products of spread exponents: there another order differs in most draws."""
    fmt, mode = _format_and_mode(data, kernels, "pam_matmul")
    m = data.draw(st.integers(1, 3), label="M")
    k = data.draw(st.integers(4, 12), label="K")
    n = data.draw(st.integers(1, 3), label="N")
    a_bits = data.draw(spread_normal_arrays(fmt, (m, k)), label="A bits")
    b_bits = data.draw(spread_normal_arrays(fmt, (k, n)), label="B bits")
    assert_matmul_equals_oracle(
        kernels, a_bits, b_bits, fmt, mode=mode, device=device, what="sums whose order shows in the last bits"
    )


def check_ftz_flushes_subnormal_inputs_of_their_own_format(
    data: st.DataObject, kernels: PamKernels, *, device: str = "cpu"
) -> None:
    """fp16/bf16/fp8 subnormals are normal once widened to fp32; ftz must flush them before that."""
    narrow = [name for name in NARROW_FORMATS if name in kernels.formats_of("pam_matmul")]
    fmt = formats.get(data.draw(st.sampled_from(narrow), label="format (narrower than its accumulator)"))
    m, k, n = (data.draw(st.integers(1, 3), label=name) for name in "MKN")
    a_bits = data.draw(rst.bit_arrays(fmt, (m, k), classes=("subnormal", "zero")), label="A bits (tiny)")
    b_bits = data.draw(rst.bit_arrays(fmt, (k, n), classes=("normal",)), label="B bits")
    assert_matmul_equals_oracle(
        kernels, a_bits, b_bits, fmt, mode="ftz", device=device, what=f"{fmt.name} subnormals"
    )


def check_other_orders_stay_within_the_error_bound(
    data: st.DataObject, kernels: PamKernels, *, device: str = "cpu"
) -> None:
    """Every order but the sequential one: each element within the oracle's rigorous bound (level B)."""
    others = [order for order in kernels.matmul_orders() if order != "sequential"]
    if not others:
        pytest.skip(f"{kernels.name}'s pam_matmul has only the sequential order")
    fmt, a_bits, b_bits = data.draw(matmul_operands(names=kernels.formats_of("pam_matmul")), label="operands")
    mode = data.draw(st.sampled_from(MODES), label="mode")
    order = data.draw(st.sampled_from(others), label="order")
    result = kernels.matmul(
        bits.to_torch(a_bits, fmt, device),
        bits.to_torch(b_bits, fmt, device),
        mode=mode,
        order=order,
        fmt=fmt,
    )
    result_bits = bits.to_bits(result)
    inside = oracle.within_bound(result_bits, a_bits, b_bits, fmt, mode=mode)
    if not inside.all():
        outside = [
            f"C{index} = {bits.describe(result_bits[index], oracle.accumulator_format(fmt))}"
            for index in zip(*np.nonzero(~inside), strict=True)
        ]
        raise BoundViolationError(
            f"{kernels.name}: order={order!r} ({mode}) outside the oracle's error bound at "
            f"{len(outside)} of {inside.size} elements: {'; '.join(outside[:5])}"
        )


def _fp32(values: list[list[float]], device: str) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device)


def check_matmul_sums_in_order(kernels: PamKernels, *, device: str = "cpu") -> None:
    """Products 2^24, 1, 1, -2^24 (each x ⊡ 1 = x) sum to 0 only in the sequential order."""
    A = _fp32([[2.0**24, 1.0, 1.0, -(2.0**24)]], device)
    B = torch.ones(4, 1, device=device)
    expected = oracle.pam_matmul(bits.to_bits(A), bits.to_bits(B), "fp32")
    assert_bit_exact(expected, np.array([[0]], dtype=np.uint32), fmt="fp32", msg="oracle's sequential sum")
    assert_bit_exact(
        kernels.matmul(A, B, mode="ieee"),
        expected,
        fmt="fp32",
        msg=f"{kernels.name}: ((0 + 2^24) + 1 + 1) - 2^24",
    )


def check_matmul_ftz_flushes_partial_sums(kernels: PamKernels, *, device: str = "cpu") -> None:
    """1.5·2^-126 - 2^-126 is subnormal: kept in "ieee", flushed to +0 in "ftz"."""
    tiny = 2.0**-126
    A = _fp32([[1.5 * tiny, -tiny]], device)
    B = torch.ones(2, 1, device=device)
    for mode, value in (("ieee", 0.5 * tiny), ("ftz", 0.0)):
        expected = np.array([[value]], dtype=np.float32)
        assert_bit_exact(
            oracle.pam_matmul(bits.to_bits(A), bits.to_bits(B), "fp32", mode=mode).view(np.float32),
            expected,
            msg=f"oracle, mode={mode}",
        )
        assert_bit_exact(
            kernels.matmul(A, B, mode=mode), expected, msg=f"{kernels.name}: partial sum, {mode}"
        )


# ---- the suites ------------------------------------------------------------------------------------------
#
# A test module subclasses these (class name Test...) and provides a module-scoped ``kernels`` fixture
# (Hypothesis rejects function-scoped fixtures).  Example counts come from the Hypothesis profile.


class ElementwiseSuite:
    """Element-wise PAM ops of ``kernels`` against the oracle: random draws and counted cases."""

    @pytest.mark.parametrize("op", BINARY_OPS)
    @given(data=st.data())
    def test_binary_op_equals_oracle(
        self, kernels: PamKernels, op: str, device: str, data: st.DataObject
    ) -> None:
        _require(kernels, op)
        check_binary_op_equals_oracle(data, kernels, op=op, device=device)

    @pytest.mark.parametrize("op", BINARY_OPS)
    @given(data=st.data())
    def test_binary_op_broadcasts_like_oracle(
        self, kernels: PamKernels, op: str, device: str, data: st.DataObject
    ) -> None:
        _require(kernels, op)
        check_binary_op_broadcasts_like_oracle(data, kernels, op=op, device=device)

    @pytest.mark.parametrize("op", ("pam_mul", "pam_div"))
    @given(data=st.data())
    def test_op_on_regular_operands_equals_oracle(
        self, kernels: PamKernels, op: str, device: str, data: st.DataObject
    ) -> None:
        _require(kernels, op)
        check_op_on_regular_operands_equals_oracle(data, kernels, op=op, device=device)

    @pytest.mark.parametrize("op", UNARY_OPS)
    @given(data=st.data())
    def test_unary_op_equals_oracle(
        self, kernels: PamKernels, op: str, device: str, data: st.DataObject
    ) -> None:
        _require(kernels, op)
        check_unary_op_equals_oracle(data, kernels, op=op, device=device)

    @pytest.mark.parametrize("op", UNARY_OPS)
    @given(data=st.data())
    def test_unary_op_near_one_equals_oracle(
        self, kernels: PamKernels, op: str, device: str, data: st.DataObject
    ) -> None:
        _require(kernels, op)
        check_unary_op_near_one_equals_oracle(data, kernels, op=op, device=device)

    @pytest.mark.parametrize("fmt_name", FORMAT_NAMES)
    @pytest.mark.parametrize("op", BINARY_OPS)
    def test_binary_op_on_counted_pairs(
        self, kernels: PamKernels, op: str, fmt_name: str, device: str
    ) -> None:
        _require(kernels, op)
        check_binary_op_on_counted_pairs(kernels, op=op, fmt_name=fmt_name, device=device)

    @pytest.mark.parametrize("fmt_name", FORMAT_NAMES)
    @pytest.mark.parametrize("op", UNARY_OPS)
    def test_unary_op_on_counted_cases(
        self, kernels: PamKernels, op: str, fmt_name: str, device: str
    ) -> None:
        _require(kernels, op)
        check_unary_op_on_counted_cases(kernels, op=op, fmt_name=fmt_name, device=device)


class MatmulSuite:
    """``kernels``' ``pam_matmul`` vs the oracle: sequential bit for bit, other orders within the bound."""

    @given(data=st.data())
    def test_matmul_equals_oracle(self, kernels: PamKernels, device: str, data: st.DataObject) -> None:
        _require(kernels, "pam_matmul")
        check_matmul_equals_oracle(data, kernels, device=device)

    @given(data=st.data())
    def test_sequential_order_is_kept_where_order_changes_the_result(
        self, kernels: PamKernels, device: str, data: st.DataObject
    ) -> None:
        _require(kernels, "pam_matmul")
        check_sequential_order_is_kept_where_order_changes_the_result(data, kernels, device=device)

    @given(data=st.data())
    def test_ftz_flushes_subnormal_inputs_of_their_own_format(
        self, kernels: PamKernels, device: str, data: st.DataObject
    ) -> None:
        _require(kernels, "pam_matmul")
        check_ftz_flushes_subnormal_inputs_of_their_own_format(data, kernels, device=device)

    @given(data=st.data())
    def test_other_orders_stay_within_the_error_bound(
        self, kernels: PamKernels, device: str, data: st.DataObject
    ) -> None:
        _require(kernels, "pam_matmul")
        check_other_orders_stay_within_the_error_bound(data, kernels, device=device)
