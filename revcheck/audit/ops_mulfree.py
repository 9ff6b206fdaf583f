"""Audit ops of the multiplication-free family: row-wise PA ops against the oracle, a step's certificate.

Two user-facing pieces:

* :func:`rowwise_specs` -- :class:`~revcheck.audit.spec.OpSpec` s for PA ops that
  reduce along the last dimension of a (rows, n) input: ``pa_softmax``,
  ``pa_log_softmax``, ``pa_mean``, ``pa_layer_norm`` and ``pa_rms_norm`` (no
  affine parameters).  A candidate is ``candidate(x) -> Tensor`` on torch
  tensors of the format under test; it is compared bit for bit with
  :mod:`revcheck.oracle.mulfree` (level O); a counterexample is narrowed to the
  first wrong row.  To make them available to ``revcheck audit --op ...`` they
  must be added to :data:`revcheck.audit.registry.REGISTRY` (the registry is being
  restructured; the lead adds the registration).
* :func:`certify_step` -- the whole certificate of one training step: the runtime
  :class:`~revcheck.mulfree.MulFreeMode` report (record mode, so every offender is
  listed) and, where the step can be traced, the static :func:`~revcheck.mulfree.prove_step`
  proof, in one :class:`StepCertificate` (level K).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from revcheck import strategies as rst
from revcheck.audit import tensors, values
from revcheck.audit.report import Finding
from revcheck.audit.spec import Candidate, Case, ExhaustivePlan, OpSpec, Outputs
from revcheck.formats import FloatFormat

__all__ = ["ROWWISE_OPS", "StepCertificate", "certify_step", "rowwise_specs"]

#: op name -> summary; the oracle function of each is ``revcheck.oracle.mulfree.<name>``.
ROWWISE_OPS = {
    "pa_softmax": "PA softmax along the last dimension, shift floor(row max) (base 2)",
    "pa_log_softmax": "PA log-softmax along the last dimension (base 2)",
    "pa_mean": "PA mean of each row: sequential sum ⊘ n",
    "pa_layer_norm": "PA layer norm of each row, eps 1e-5, no affine parameters",
    "pa_rms_norm": "PA RMS norm of each row, eps 1e-6, no weight",
}
#: Ops whose result has one value per row (shape (rows,)); the others keep the input's shape.
REDUCING_OPS = frozenset({"pa_mean"})
MAX_ROWS, MAX_ROW_LENGTH = 4, 12


def _oracle(name: str, x: np.ndarray[Any, Any], fmt: FloatFormat) -> np.ndarray[Any, Any]:
    from revcheck.oracle import mulfree as oracle

    if name in ("pa_layer_norm",):
        return oracle.pa_layer_norm(x, None, None, fmt)
    if name == "pa_rms_norm":
        return oracle.pa_rms_norm(x, None, fmt)
    return getattr(oracle, name)(x, fmt)  # type: ignore[no-any-return]


def _strategy(fmt: FloatFormat) -> st.SearchStrategy[Case]:
    moderate = st.builds(
        lambda negative, exponent, fraction: (
            (fmt.sign_mask if negative else 0) | (exponent + fmt.bias) << fmt.mantissa_bits | fraction
        ),
        st.booleans(),
        st.integers(-6, 6),
        st.integers(0, fmt.mantissa_mask),
    )
    element = st.one_of(moderate, moderate, moderate, rst.bit_patterns(fmt))
    shapes = st.tuples(st.integers(1, MAX_ROWS), st.integers(1, MAX_ROW_LENGTH))
    return shapes.flatmap(lambda shape: hnp.arrays(fmt.uint_dtype, shape, elements=element)).map(
        lambda x: {"x": x}
    )


def _call(
    name: str, candidate: Candidate, case: Case, fmt: FloatFormat, mode: str | None, device: str
) -> Outputs:
    result = candidate(tensors.to_tensor(case["x"], fmt, device))
    shape = case["x"].shape[:-1] if name in REDUCING_OPS else case["x"].shape
    return {"result": tensors.output_bits(result, fmt, shape, f"the result of {name}")}


def _compare(
    case: Case, expected: Outputs, actual: Outputs, fmt: FloatFormat, mode: str | None
) -> Finding | None:
    index = values.first_float_mismatch(expected["result"], actual["result"], fmt)
    if index is None:
        return None
    row = case["x"][index[0]] if case["x"].ndim == 2 else case["x"]
    want, got = int(expected["result"][index]), int(actual["result"][index])
    return Finding(
        index=index,
        inputs=(values.array_value("row", np.asarray(row), fmt),),
        expected=(values.float_value("result", want, fmt),),
        actual=(values.float_value("result", got, fmt),),
        labels=tuple(values.label(int(b), fmt) for b in np.asarray(row).reshape(-1)[:4]),
        ulp_distance=values.ulp(want, got, fmt),
        note="rows are independent: the counterexample is the first wrong row alone",
    )


def _narrow(case: Case, index: tuple[int, ...]) -> Case:
    return {"x": case["x"][index[0] : index[0] + 1]}


def _sample(fmt: FloatFormat, rng: np.random.Generator) -> Case:
    return {"x": rng.integers(0, 1 << fmt.width, size=(64, 8), dtype=np.uint64).astype(fmt.uint_dtype)}


def _no_exhaustive(fmt: FloatFormat) -> ExhaustivePlan | None:
    return None


def _oracle_outputs(name: str, case: Case, fmt: FloatFormat, mode: str | None) -> Outputs:
    return {"result": np.asarray(_oracle(name, case["x"], fmt))}


def rowwise_specs() -> tuple[OpSpec, ...]:
    """One :class:`OpSpec` per entry of :data:`ROWWISE_OPS` (formats fp64, fp32, fp16, bf16; no modes)."""
    from revcheck.oracle.mulfree import SUPPORTED_FORMATS

    return tuple(
        OpSpec(
            name=name,
            signature="candidate(x: (rows, n) tensor) -> Tensor of x's dtype, shape "
            + ("(rows,)" if name in REDUCING_OPS else "(rows, n)"),
            summary=summary,
            formats=SUPPORTED_FORMATS,
            modes=(),
            strategy=_strategy,
            call=partial(_call, name),
            oracle=partial(_oracle_outputs, name),
            compare=_compare,
            narrow=_narrow,
            sample=_sample,
            exhaustive=_no_exhaustive,
        )
        for name, summary in ROWWISE_OPS.items()
    )


# ---- a step's certificate ------------------------------------------------------------------------------


@dataclass
class StepCertificate:
    """The runtime report and (if the step could be traced) the static proof of one training step."""

    runtime: Any  # revcheck.mulfree.Report
    static: Any | None  # revcheck.mulfree.StaticProof, or None
    static_skipped: str = ""
    level: str = "K"

    @property
    def multiplication_free(self) -> bool:
        runtime_ok = not self.runtime.violations()
        return runtime_ok and (self.static is None or self.static.multiplication_free)

    def summary(self) -> str:
        lines = [self.runtime.table(), self.runtime.certificate()]
        lines.append(
            self.static.summary() if self.static is not None else f"static proof: {self.static_skipped}"
        )
        return "\n".join(lines)


def certify_step(make_step: Callable[[], Callable[[], Any]], *, static: bool = True) -> StepCertificate:
    """Certify a training step: ``make_step()`` returns the step; it runs once per part (two steps happen).

    The runtime part runs in record mode, so every float multiply and unknown
    op is listed (by phase, op, dtypes, first stack) instead of stopping at the
    first; the static part is skipped, with the reason, when the step reads
    tensor values on the host.
    """
    from revcheck.mulfree import MulFreeMode, NotTraceableError, prove_step

    step = make_step()
    with MulFreeMode(record=True) as mode:
        step()
    proof, skipped = None, ""
    if static:
        try:
            proof = prove_step(step)
        except NotTraceableError as error:
            skipped = f"not traceable: {error}"
    else:
        skipped = "not requested"
    return StepCertificate(mode.report, proof, skipped)
