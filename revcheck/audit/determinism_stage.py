"""Stage 3 of a check (``determinism=True``): one larger input, :data:`RUNS` calls, identical bits.

Run-to-run differences are found by :func:`revcheck.audit.determinism.first_difference`,
the same comparison :func:`~revcheck.audit.determinism.assert_deterministic` makes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from revcheck import formats as _formats
from revcheck.audit.case import CandidateRaised, Failure, elements, guarded
from revcheck.audit.config import CheckConfig
from revcheck.audit.determinism import first_difference
from revcheck.audit.report import Finding, Value
from revcheck.audit.spec import Outputs
from revcheck.audit.tensors import BadOutput
from revcheck.formats import FloatFormat

__all__ = ["RUNS", "run"]

RUNS = 5


def run(check: CheckConfig) -> Failure | None:
    """Call the candidate :data:`RUNS` times on the op's sample case; a failure if any run differs."""
    seed = check.audit.seed
    rng = np.random.default_rng(0 if seed is None else seed)
    case = check.spec.sample(check.fmt, rng)
    call = guarded(check.candidate)
    mode = check.candidate_mode
    try:
        reference = check.spec.call(call, case, check.fmt, mode, check.device)
        for run_index in range(1, RUNS):
            output = check.spec.call(call, case, check.fmt, mode, check.device)
            difference = first_difference(_as_floats(reference, check.fmt), _as_floats(output, check.fmt))
            if difference is not None:
                note = f"not deterministic: run {run_index} differs from run 0 in {difference.text()}"
                first = Value(f"output {difference.path} (run 0)", difference.first)
                other = Value(f"output {difference.path} (run {run_index})", difference.other)
                inputs = (
                    Value("inputs", f"the op's sample case ({elements(case)} elements, seed {seed or 0})"),
                )
                return Failure(
                    case,
                    Finding(difference.index, inputs, (first,), (other,), ("nondeterministic",), note=note),
                )
    except (CandidateRaised, BadOutput) as error:
        return Failure(
            case, Finding((), (), (), (), ("raised",), note=f"during the determinism runs: {error}")
        )
    return None


def _as_floats(outputs: Outputs, fmt: FloatFormat) -> dict[str, Any]:
    """Bit-pattern outputs as float arrays where NumPy has the format, so differences print as values."""
    shown: dict[str, Any] = {}
    for name, array in outputs.items():
        same_width = [
            f for f in (fmt, _formats.get("fp32"), _formats.get("fp64")) if f.uint_dtype == array.dtype
        ]
        if same_width and same_width[0].numpy_float is not None:
            shown[name] = array.view(same_width[0].numpy_float)
        else:
            shown[name] = array
    return shown
