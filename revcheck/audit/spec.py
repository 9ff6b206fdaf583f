"""The description of one auditable operation: :class:`OpSpec`, and the types its parts exchange.

An :class:`OpSpec` is data: how to draw inputs, how to call the candidate, what
the oracle says, how to compare, and how to enumerate every input where that is
feasible.  The audit's stages know nothing op-specific.  An elementwise op on
bit patterns also names its bit-pattern oracle and revcheck's own
implementations of it: that is what the exhaustive sweep (:mod:`revcheck.sweep`)
needs, so the sweep looks its ops up in the same registry.

A *case* is a dict of named inputs: NumPy bit-pattern arrays (``fmt.uint_dtype``),
int64 code arrays, or plain ints (such as the BDIA grid exponent ``l``).
*Outputs* are a dict of named NumPy arrays (bit patterns or codes).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import strategies as st

from revcheck.audit.report import Finding
from revcheck.errors import UsageError
from revcheck.formats import FloatFormat

__all__ = ["Candidate", "Case", "ExhaustivePlan", "OpSpec", "Outputs"]

Case = dict[str, Any]
Outputs = dict[str, np.ndarray[Any, Any]]
Candidate = Callable[..., Any]


@dataclass(frozen=True)
class ExhaustivePlan:
    """Every input of an op in one format, in chunks.

    ``size`` is the number of input elements; ``by_default`` whether the audit
    runs it without ``exhaustive=True`` (8-bit formats, 16-bit unary ops).
    """

    size: int
    by_default: bool
    chunks: Callable[[], Iterator[Case]]


@dataclass(frozen=True)
class OpSpec:
    """One auditable operation.

    ``signature`` documents what a candidate must look like.  ``modes`` are the
    PAM rounding modes the op has (empty for ops without a mode); a candidate
    that accepts a ``mode`` keyword gets it, one that does not can only be
    audited in mode ``"ieee"``.

    For an elementwise op on bit patterns, ``inputs`` names its operands,
    ``bit_oracle(*bits, fmt, mode=...)`` is the oracle on bit-pattern arrays, and
    ``implementations`` maps an implementation name (``"torch"``, ``"triton"``)
    to the ``"module:function"`` that implements the op on tensors; the sweep
    enumerates exactly these ops (:attr:`sweepable`).

    ``examples(fmt)`` are counted cases the audit runs first, in every run and
    under every seed (special values, range edges, reduction lengths at blocking
    sizes), before Hypothesis generates ``max_examples`` more.
    """

    name: str
    signature: str
    summary: str
    formats: tuple[str, ...]
    modes: tuple[str, ...]
    strategy: Callable[[FloatFormat], st.SearchStrategy[Case]]
    call: Callable[[Candidate, Case, FloatFormat, str | None, str], Outputs]
    oracle: Callable[[Case, FloatFormat, str | None], Outputs]
    compare: Callable[[Case, Outputs, Outputs, FloatFormat, str | None], Finding | None]
    narrow: Callable[[Case, tuple[int, ...]], Case]
    sample: Callable[[FloatFormat, np.random.Generator], Case]
    exhaustive: Callable[[FloatFormat], ExhaustivePlan | None]
    inputs: tuple[str, ...] = ()
    bit_oracle: Callable[..., np.ndarray[Any, Any]] | None = None
    implementations: Mapping[str, str] = field(default_factory=dict)
    #: Counted cases run before any generated example (Hypothesis' explicit phase), whatever the
    #: seed: the special values, edges and sizes a realistic bug hides behind, reached in every run.
    examples: Callable[[FloatFormat], list[Case]] = field(default=lambda fmt: [])

    @property
    def arity(self) -> int:
        """Number of operands (array inputs)."""
        return len(self.inputs)

    @property
    def sweepable(self) -> bool:
        """Whether the exhaustive sweep can enumerate this op (an elementwise op on bit patterns)."""
        return self.bit_oracle is not None and bool(self.inputs)

    def implementation(self, name: str) -> Callable[..., Any]:
        """revcheck's own implementation ``name`` of this op, imported now.

        Raises :class:`~revcheck.errors.UsageError` for a name the op does not have;
        an ``ImportError`` of the implementation's module (e.g. triton missing)
        propagates, so the caller can say what to use instead.
        """
        try:
            reference = self.implementations[name]
        except KeyError:
            known = ", ".join(self.implementations) or "none"
            raise UsageError(f"{self.name} has no implementation {name!r}; use one of {known}") from None
        module_name, _, attribute = reference.partition(":")
        # Looked up at call time (not import time): importing triton is optional and slow.
        module = importlib.import_module(module_name)
        try:
            return getattr(module, attribute)  # type: ignore[no-any-return]
        except AttributeError:
            raise UsageError(
                f"{module_name} has no {attribute}; the {name} implementation is missing"
            ) from None

    def describe(self) -> str:
        return f"{self.name}: {self.signature}\n    {self.summary}\n    formats: {', '.join(self.formats)}"
