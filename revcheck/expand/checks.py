"""``assert_function_preserved``: is the grown model the old function, at level K, O, B or R?

* **K** — both models run on their real kernels; outputs (and gradients) must
  have equal bits.  Works for any two modules or callables.  The evidence is
  :func:`revcheck.testing.compare_bits`' (mismatch count, first indices, both
  values in hex, ULP distances).
* **O** — both models run through the declared-order oracle
  (:mod:`revcheck.oracle.expand`), bit for bit; needs the reference architecture.
  No torch kernel is involved: O is a claim about the arithmetic, not a kernel.
* **B** — the kernel's output of ``after`` lies within a rigorous bound of
  ``before``'s exact output: both lie in the interval enclosure of every
  evaluation of ``after`` that the error model allows
  (:mod:`revcheck.oracle.enclosure`); reports the bound and the worst element.
* **R** — both models evaluated as exact real functions (mpmath, 200 bits) on tiny
  shapes; with a growth certificate, scaled parameters take their exact values
  (the real transformation), otherwise the stored values.

With ``check_grads`` (K and O), the gradients of every pre-existing parameter
are compared too: a parameter multiplied by ``c`` must get the old gradient
divided by ``c`` (docs/spec.md §4), and the report lists the factors applied.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from revcheck.errors import UsageError
from revcheck.expand.certificate import GrowthCertificate, ParameterMap, is_power_of
from revcheck.expand.transforms import fingerprint
from revcheck.levels import Level, check_level
from revcheck.nn.expand import ReferenceTransformer, check_reference, oracle_parameters, storage_name
from revcheck.testing import Comparison, compare_bits

__all__ = [
    "FunctionNotPreservedError",
    "GradientResult",
    "PreservationReport",
    "assert_function_preserved",
    "resolve_certificate",
]

CertificateArg = GrowthCertificate | Literal["auto"] | None

GRAD_SEED = 0x5EED


class FunctionNotPreservedError(AssertionError):
    """``after`` does not compute ``before``'s function at the level checked; the message is the evidence."""

    def __init__(self, report: PreservationReport) -> None:
        super().__init__(report.text())
        self.report = report
        self.level = report.level
        self.comparison = report.comparison


@dataclass
class GradientResult:
    """One pre-existing parameter's gradient: where it lives in ``after`` and how it compared."""

    parameter: str
    after_parameter: str
    factor: float
    power_of_two: bool
    comparison: Comparison | None = None
    note: str = ""

    @property
    def equal(self) -> bool:
        return self.comparison is not None and self.comparison.equal

    @property
    def failed(self) -> bool:
        """Differing bits, or a gradient on one side only (an unused parameter on both sides is fine)."""
        return (self.comparison is not None and not self.comparison.equal) or self.note.startswith(
            "gradient missing"
        )

    def line(self) -> str:
        rescale = (
            "" if self.factor == 1 else f", scaled x {self.factor!r}: expected gradient / {self.factor!r}"
        )
        where = "" if self.after_parameter == self.parameter else f" -> {self.after_parameter}"
        if self.comparison is None:
            return f"  {self.parameter}{where}{rescale}: {self.note}"
        if self.comparison.equal:
            return f"  {self.parameter}{where}{rescale}: bit-exact ({self.comparison.total} elements)"
        head = self.comparison.message().splitlines()[0]
        return f"  {self.parameter}{where}{rescale}: {head}"


@dataclass
class PreservationReport:
    """What was compared, at which level, and the evidence; returned on success, attached to the error."""

    level: Level
    passed: bool
    what: str
    lines: list[str] = field(default_factory=list)
    comparison: Comparison | None = None
    gradients: list[GradientResult] = field(default_factory=list)
    bound: dict[str, Any] = field(default_factory=dict)
    subnormal_results: int = 0  # level O: subnormal intermediate results in after's oracle evaluation

    def text(self) -> str:
        verdict = "preserved" if self.passed else "NOT preserved"
        out = [f"function {verdict} at level {self.level} ({self.level.meaning}): {self.what}", *self.lines]
        if self.gradients:
            failed = [g for g in self.gradients if g.failed]
            out.append(
                f"gradients of {len(self.gradients)} pre-existing parameter(s): "
                f"{'all bit-exact' if not failed else f'{len(failed)} differ'} after the rescaling"
            )
            out += [g.line() for g in self.gradients if not g.equal or g.factor != 1]
            for g in failed[:1]:
                if g.comparison is None:
                    continue
                out.append(f"first differing gradient ({g.parameter}):")
                out += ["  " + line for line in g.comparison.message().splitlines()]
        return "\n".join(out)

    def __str__(self) -> str:
        return self.text()


# ---- inputs, outputs, mappings ---------------------------------------------------------------------


def _as_args(inputs: object) -> tuple[Any, ...]:
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def _ids(inputs: object) -> np.ndarray[Any, Any]:
    args = _as_args(inputs)
    if len(args) != 1:
        raise UsageError("the reference model takes one input, the token ids (batch, time)")
    ids = args[0]
    if isinstance(ids, Tensor):
        ids = ids.detach().cpu().numpy()
    array = np.asarray(ids)
    if array.dtype.kind not in "iu" or array.ndim != 2:
        raise UsageError(
            f"token ids must be an integer array (batch, time); got {array.dtype} of shape {array.shape}"
        )
    return array.astype(np.int64)


def _nan_notes(after: np.ndarray[Any, Any], before: np.ndarray[Any, Any]) -> list[str]:
    notes: list[str] = []
    if after.shape != before.shape:
        return notes
    new_nan = np.isnan(after) & ~np.isnan(before)
    if new_nan.any():
        notes.append(
            f"after is NaN at {int(new_nan.sum())} element(s) where before is not: an inf or NaN "
            "activation met a "
            "zero weight (0·inf = NaN; a zero block does not neutralise a non-finite activation, "
            "docs/spec.md §0)"
        )
    nonfinite = ~np.isfinite(before)
    if nonfinite.any():
        notes.append(
            f"before itself has {int(nonfinite.sum())} non-finite element(s): preservation is claimed for "
            "finite "
            "activations only; NaNs are compared as one class"
        )
    return notes


def resolve_certificate(
    before: object, after: object, certificate: CertificateArg
) -> GrowthCertificate | None:
    """The certificate that leads from ``before`` to ``after``: given, attached to ``after``, or None.

    ``"auto"`` takes ``after.growth_certificate`` or ``after.growth_step`` when
    its fingerprints match both models; a given certificate must match them too.
    """
    if certificate is None:
        return None
    if type(before) is not ReferenceTransformer or type(after) is not ReferenceTransformer:
        if isinstance(certificate, GrowthCertificate):
            raise UsageError(
                "a growth certificate describes reference models; before and after are not both one"
            )
        return None
    source, target = fingerprint(before), fingerprint(after)
    if isinstance(certificate, GrowthCertificate):
        if certificate.source != source or certificate.target != target:
            raise UsageError(
                "the certificate does not lead from before to after (its fingerprints differ): after was "
                "changed "
                "(trained?) since it was grown, or the certificate belongs to other models; pass the "
                "matching one"
            )
        return certificate
    for candidate in (getattr(after, "growth_certificate", None), getattr(after, "growth_step", None)):
        if (
            isinstance(candidate, GrowthCertificate)
            and candidate.source == source
            and candidate.target == target
        ):
            return candidate
    return None


def _parameter_map(
    before: Any,
    after: Any,
    certificate: GrowthCertificate | None,
    explicit: Mapping[str, ParameterMap] | None,
) -> dict[str, ParameterMap]:
    if explicit is not None:
        return dict(explicit)
    if certificate is not None:
        return dict(certificate.parameter_map)
    old = dict(before.named_parameters())
    new = dict(after.named_parameters())
    mapping = {}
    for name, parameter in old.items():
        if name not in new or new[name].shape != parameter.shape:
            got = tuple(new[name].shape) if name in new else "absent"
            raise UsageError(
                f"cannot tell where before's parameter {name!r} {tuple(parameter.shape)} lives in after "
                f"({got}); "
                "pass certificate= (a growth certificate) or parameter_map={name: ParameterMap(...)}"
            )
        mapping[name] = ParameterMap(name, tuple(np.arange(n) for n in parameter.shape))
    return mapping


def _grad_outputs(shape: tuple[int, ...], dtype: torch.dtype, grad_outputs: Tensor | None) -> Tensor:
    if grad_outputs is not None:
        if tuple(grad_outputs.shape) != shape:
            raise UsageError(f"grad_outputs has shape {tuple(grad_outputs.shape)}, the outputs {shape}")
        return grad_outputs.detach().to(dtype)
    generator = torch.Generator().manual_seed(GRAD_SEED)
    return torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)


def _compare_gradients(
    mapping: Mapping[str, ParameterMap],
    before_grads: Mapping[str, Tensor | np.ndarray[Any, Any]],
    after_grads: Mapping[str, Tensor | np.ndarray[Any, Any]],
    fmt: str | None = None,
) -> list[GradientResult]:
    results = []
    for name, entry in mapping.items():
        power = is_power_of(entry.factor_squared, 4) or is_power_of(1 / entry.factor_squared, 4)
        result = GradientResult(name, entry.parameter, entry.factor, power)
        old, new = before_grads.get(name), after_grads.get(entry.parameter)
        if old is None or new is None:
            both = old is None and new is None
            result.note = "no gradient on either side (unused)" if both else "gradient missing on one side"
            results.append(result)
            continue
        region = _region(new, entry)
        expected = _divide(old, entry.factor)
        if fmt == "bf16":
            result.comparison = compare_bits(_bf16_bits(region), _bf16_bits(expected), fmt="bf16")
        elif fmt == "fp16":
            result.comparison = compare_bits(
                np.asarray(region).astype(np.float16), np.asarray(expected).astype(np.float16)
            )
        else:
            result.comparison = compare_bits(region, expected)
        results.append(result)
    return results


def _region(value: Tensor | np.ndarray[Any, Any], entry: ParameterMap) -> Any:
    where = np.ix_(*entry.index)
    if isinstance(value, Tensor):
        return value[tuple(torch.from_numpy(i) for i in where)]
    return value[where]


def _divide(value: Tensor | np.ndarray[Any, Any], factor: float) -> Any:
    """``value / factor`` rounded once to ``value``'s format (exact when ``factor`` is a power of two)."""
    if factor == 1:
        return value
    if isinstance(value, Tensor):
        return (value.double() / factor).to(value.dtype)
    result = np.asarray(value, dtype=np.float64) / factor
    return result.astype(value.dtype)


def _bf16_bits(values: Any) -> np.ndarray[Any, Any]:
    array = np.ascontiguousarray(np.asarray(values, dtype=np.float32))
    return (array.view(np.uint32) >> np.uint32(16)).astype(np.uint16)


# ---- the four levels -------------------------------------------------------------------------------


def _describe_kernel(output: Tensor) -> str:
    threads = torch.get_num_threads()
    device = str(output.device)
    name = torch.cuda.get_device_name(output.device) if output.is_cuda else f"CPU, {threads} threads"
    return (
        f"torch {torch.__version__} on {device} ({name}), {output.dtype}, output shape {tuple(output.shape)}"
    )


def _level_k(
    before: Callable[..., Any],
    after: Callable[..., Any],
    inputs: object,
    check_grads: bool,
    certificate: GrowthCertificate | None,
    parameter_map: Mapping[str, ParameterMap] | None,
    grad_outputs: Tensor | None,
) -> PreservationReport:
    args = _as_args(inputs)
    with torch.set_grad_enabled(check_grads):
        out_before, out_after = before(*args), after(*args)
    for name, out in (("before", out_before), ("after", out_after)):
        if not isinstance(out, Tensor):
            raise UsageError(
                f"{name}(*inputs) returned {type(out).__name__}; level K compares tensor outputs"
            )
    comparison = compare_bits(out_after.detach(), out_before.detach())
    report = PreservationReport(Level.K, comparison.equal, "kernel outputs " + _describe_kernel(out_after))
    report.comparison = comparison
    if not comparison.equal:
        report.lines += comparison.message().splitlines()
        report.lines += (
            _nan_notes(out_after.detach().double().cpu().numpy(), out_before.detach().double().cpu().numpy())
            if comparison.reason == "values"
            else []
        )
    if check_grads:
        if not all(isinstance(m, torch.nn.Module) for m in (before, after)):
            raise UsageError("check_grads needs torch modules (their parameters), not plain callables")
        mapping = _parameter_map(before, after, certificate, parameter_map)
        if comparison.reason == "shape":
            raise UsageError("check_grads needs outputs of one shape")
        cotangent = _grad_outputs(tuple(out_after.shape), out_after.dtype, grad_outputs)
        grads = []
        modules: tuple[Any, Any] = (before, after)
        for model, out in zip(modules, (out_before, out_after), strict=True):
            names, params = zip(
                *[(n, p) for n, p in model.named_parameters() if p.requires_grad], strict=True
            )
            values = torch.autograd.grad((out * cotangent.to(out.device)).sum(), params, allow_unused=True)
            grads.append({n: g.detach().cpu() for n, g in zip(names, values, strict=True) if g is not None})
        report.gradients = _compare_gradients(mapping, grads[0], grads[1])
        report.passed = report.passed and not any(g.failed for g in report.gradients)
    return report


def _level_o(
    before: ReferenceTransformer,
    after: ReferenceTransformer,
    inputs: object,
    check_grads: bool,
    certificate: GrowthCertificate | None,
    parameter_map: Mapping[str, ParameterMap] | None,
    grad_outputs: Tensor | None,
) -> PreservationReport:
    from revcheck.oracle.expand import OrderedArithmetic, oracle_forward, oracle_gradients

    ids = _ids(inputs)
    storage_b, storage_a = storage_name(before.dtype), storage_name(after.dtype)
    params_b, params_a = oracle_parameters(before), oracle_parameters(after)
    arithmetic_a = OrderedArithmetic(storage_a)
    out_b = oracle_forward(before.config, params_b, ids, storage_b)
    out_a = oracle_forward(after.config, params_a, ids, storage_a, arithmetic_a)
    comparison = _compare_storage(out_a, out_b, storage_a, storage_b)
    what = (
        f"declared-order oracle (revcheck.oracle.expand), {storage_a}, output shape {out_a.shape}; "
        "no kernel involved"
    )
    report = PreservationReport(Level.O, comparison.equal, what, comparison=comparison)
    if not comparison.equal:
        report.lines += comparison.message().splitlines()
        report.lines += _nan_notes(out_a.astype(np.float64), out_b.astype(np.float64))
    if check_grads:
        if storage_a != storage_b:
            raise UsageError("check_grads at level O needs both models in one dtype")
        mapping = _parameter_map(before, after, certificate, parameter_map)
        cotangent = _grad_outputs(out_a.shape, after.dtype, grad_outputs)
        g = cotangent.float() if storage_a in ("bf16", "fp16") else cotangent
        grad_logits = g.numpy()
        grads_b = oracle_gradients(before.config, params_b, ids, grad_logits, storage_b)
        grads_a = oracle_gradients(after.config, params_a, ids, grad_logits, storage_a, arithmetic_a)
        report.gradients = _compare_gradients(mapping, grads_b, grads_a, storage_a)
        report.passed = report.passed and not any(g.failed for g in report.gradients)
    report.subnormal_results = arithmetic_a.subnormal_results
    if not report.passed and arithmetic_a.subnormal_results:
        report.lines.append(
            f"after's oracle evaluation had {arithmetic_a.subnormal_results} subnormal intermediate "
            "result(s): power-of-two growth factors are exact only in the normal range (a condition of the "
            "certificate), so a scaled value there may differ by rounding without the growth being wrong"
        )
    return report


def _compare_storage(
    a: np.ndarray[Any, Any], b: np.ndarray[Any, Any], storage_a: str, storage_b: str
) -> Comparison:
    if storage_a == storage_b == "bf16":
        return compare_bits(_bf16_bits(a), _bf16_bits(b), fmt="bf16")
    if storage_a == storage_b == "fp16":
        return compare_bits(a.astype(np.float16), b.astype(np.float16))
    return compare_bits(a, b)


_PRECISION = {"fp64": 53, "fp32": 24, "bf16": 8, "fp16": 11}


def _exact_overrides(
    before: ReferenceTransformer, after: ReferenceTransformer, certificate: GrowthCertificate
) -> tuple[dict[str, Any], Fraction, list[str]]:
    """Exact values of ``after``'s scaled parameters (the old exact value times the exact factor), the exact
    eps, and the scaled entries whose STORED value is not that exact value rounded once (problems)."""
    import mpmath

    from revcheck.exact.expand import as_exact

    params_b, params_a = oracle_parameters(before), oracle_parameters(after)
    unit = mpmath.mpf(2) ** -_PRECISION[storage_name(after.dtype)]
    overrides: dict[str, Any] = {}
    problems: list[str] = []
    for name, entry in certificate.parameter_map.items():
        if entry.factor_squared == 1:
            continue
        target = overrides.get(entry.parameter)
        if target is None:
            target = as_exact(params_a[entry.parameter])
        factor = mpmath.sqrt(mpmath.mpf(entry.factor_squared.numerator) / entry.factor_squared.denominator)
        exact = as_exact(params_b[name]) * factor
        where = np.ix_(*entry.index)
        stored = target[where]
        # one rounding to nearest (through binary64 first: at most u (1 + 2**-28) relative, under 2u)
        wrong = [
            index
            for index in np.ndindex(exact.shape)
            if abs(stored[index] - exact[index]) > 2 * unit * abs(exact[index])
        ]
        if wrong:
            index = wrong[0]
            problems.append(
                f"{entry.parameter}: {len(wrong)} scaled entr(ies) are not {name} x {entry.factor!r} "
                "rounded once "
                f"(first: stored {mpmath.nstr(stored[index], 12)}, exact {mpmath.nstr(exact[index], 12)})"
            )
        target[where] = exact
        overrides[entry.parameter] = target
    eps = Fraction(before.config.eps) * certificate.eps_factor
    if abs(Fraction(after.config.eps) - eps) > eps * Fraction(1, 2**53):
        problems.append(
            f"after's eps {after.config.eps!r} is not the certificate's eps {before.config.eps!r} x "
            f"{certificate.eps_factor} = {float(eps)!r} (rounded once)"
        )
    return overrides, eps, problems


def _level_r(
    before: ReferenceTransformer,
    after: ReferenceTransformer,
    inputs: object,
    certificate: GrowthCertificate | None,
    precision: int,
) -> PreservationReport:
    import mpmath

    from revcheck.exact.expand import R_TOLERANCE_BITS, exact_forward, r_distance

    ids = _ids(inputs)
    try:
        with mpmath.workprec(precision):
            out_b = exact_forward(before.config, oracle_parameters(before), ids, precision=precision)
            overrides, eps, problems = (
                ({}, None, []) if certificate is None else _exact_overrides(before, after, certificate)
            )
            out_a = exact_forward(
                after.config, oracle_parameters(after), ids, precision=precision, overrides=overrides, eps=eps
            )
            worst, where = r_distance(out_a, out_b)
    except ValueError as error:
        raise UsageError(str(error)) from None
    source = (
        "scaled parameters at their exact values (the real transformation of the certificate)"
        if certificate is not None
        else "stored parameters read as exact reals"
    )
    what = f"exact real functions (mpmath, {precision} bits), {source}, output shape {out_a.shape}"
    passed = worst <= -R_TOLERANCE_BITS and not problems
    report = PreservationReport(Level.R, passed, what)
    report.lines += [f"stored parameters disagree with the certificate: {problem}" for problem in problems]
    if where:
        with mpmath.workprec(precision):
            report.lines.append(
                f"largest difference at index {where}: before {mpmath.nstr(out_b[where], 20)}, "
                f"after {mpmath.nstr(out_a[where], 20)}, relative to the output scale 2**{worst:.1f} "
                f"(R-equal means below 2**-{R_TOLERANCE_BITS})"
            )
    else:
        report.lines.append("every element equal")
    if not passed and certificate is None:
        attached = getattr(after, "growth_certificate", None)
        if isinstance(attached, GrowthCertificate) and any(not s.power_of_two for s in attached.scaled):
            report.lines.append(
                "after carries rounded growth factors; pass certificate=after.growth_certificate to check "
                "the "
                "real transformation (its exact factors) rather than the stored, rounded parameters"
            )
    return report


def _level_b(
    before: ReferenceTransformer,
    after: ReferenceTransformer,
    inputs: object,
    certificate: GrowthCertificate | None,
    error_model: Any,
) -> PreservationReport:
    from revcheck.oracle.enclosure import ErrorModel, IntervalArithmetic
    from revcheck.oracle.expand import forward

    ids = _ids(inputs)
    storage = storage_name(after.dtype)
    model = error_model or ErrorModel.for_storage(storage)
    params_b, params_a = oracle_parameters(before), oracle_parameters(after)
    uncertain: dict[str, np.ndarray[Any, Any]] = {}
    eps_values = [after.config.eps]
    if certificate is not None:
        for entry in certificate.parameter_map.values():
            if entry.factor_squared != 1 and not (
                is_power_of(entry.factor_squared, 4) or is_power_of(1 / entry.factor_squared, 4)
            ):
                mask = uncertain.setdefault(
                    entry.parameter, np.zeros(params_a[entry.parameter].shape, dtype=bool)
                )
                mask[np.ix_(*entry.index)] = True
        eps_values.append(float(Fraction(before.config.eps) * certificate.eps_factor))
    with torch.no_grad():
        kernel = after(torch.as_tensor(ids, device=after.device)).detach().double().cpu().numpy()
    with np.errstate(all="ignore"):
        arithmetic = IntervalArithmetic(model, uncertain, fused_attention=after.config.attention == "sdpa")
        enclosure = forward(after.config, params_a, ids, arithmetic, eps=arithmetic.hull(*eps_values))
        exact_arithmetic = IntervalArithmetic(ErrorModel.exact())
        exact = forward(
            before.config, params_b, ids, exact_arithmetic, eps=exact_arithmetic.hull(before.config.eps)
        )
    what = (
        f"kernel output of after ({storage}) against before's exact output; error model: {model.describe()}"
    )
    report = PreservationReport(Level.B, True, what)
    if enclosure.shape != exact.shape or kernel.shape != exact.shape:
        report.passed = False
        report.lines.append(f"output shapes differ: before {exact.shape}, after {kernel.shape}")
        return report
    unbounded = ~(enclosure.finite & exact.finite)
    outside = ~enclosure.contains(kernel) & ~unbounded
    not_preserved = ~enclosure.contains_interval(exact) & ~unbounded
    bound = np.maximum(enclosure.hi - exact.lo, exact.hi - enclosure.lo)
    centre = exact.lo + (exact.hi - exact.lo) / 2
    deviation = np.abs(kernel - centre)
    report.bound = {"bound": bound, "deviation": deviation, "outside": outside, "unbounded": unbounded}
    if unbounded.any():
        report.passed = False
        report.lines.append(
            f"no finite bound at {int(unbounded.sum())} of {unbounded.size} element(s): an inf/NaN "
            "activation, or a "
            "norm over values that may be 0 (eps = 0); level B does not hold as checked"
        )
    if not_preserved.any():
        report.passed = False
        index = tuple(int(i) for i in np.argwhere(not_preserved)[0])
        report.lines.append(
            f"before's exact output leaves after's enclosure at {int(not_preserved.sum())} element(s): not "
            "preserved "
            f"even within the bound; first at {index}: before in [{exact.lo[index]!r}, {exact.hi[index]!r}], "
            f"after's enclosure [{enclosure.lo[index]!r}, {enclosure.hi[index]!r}]"
        )
    if outside.any():
        report.passed = False
        index = tuple(int(i) for i in np.argwhere(outside)[0])
        report.lines.append(
            f"the kernel's result leaves the enclosure at {int(outside.sum())} element(s) (the kernel is "
            "less accurate "
            f"than the error model assumes, or computes another function); first at {index}: kernel "
            f"{kernel[index]!r}, enclosure [{enclosure.lo[index]!r}, {enclosure.hi[index]!r}]"
        )
    finite = ~unbounded
    if finite.any():
        ratio = np.where(finite, deviation / np.where(bound > 0, bound, np.inf), -1.0)
        index = tuple(int(i) for i in np.unravel_index(int(np.argmax(ratio)), ratio.shape))
        spacing = (
            float(np.spacing(np.float32(abs(centre[index]))))
            if storage != "fp64"
            else float(np.spacing(abs(centre[index])))
        )
        report.lines.append(
            f"bound: |after_kernel - before_exact| <= {float(bound[finite].max()):.3e} (largest over "
            "elements); "
            f"worst element {index}: deviation {float(deviation[index]):.3e} of bound "
            f"{float(bound[index]):.3e} "
            f"({float(ratio[index]):.2%} of it; bound = {float(bound[index]) / spacing:.1f} fp32-ulp there)"
            if storage != "fp64"
            else f"bound: |after_kernel - before_exact| <= {float(bound[finite].max()):.3e}; "
            f"worst element {index}: "
            f"deviation {float(deviation[index]):.3e} of bound {float(bound[index]):.3e}"
        )
    return report


# ---- the public check -----------------------------------------------------------------------------


def assert_function_preserved(
    before: Callable[..., Any],
    after: Callable[..., Any],
    inputs: object,
    *,
    level: str | Level,
    check_grads: bool = False,
    certificate: CertificateArg = "auto",
    parameter_map: Mapping[str, ParameterMap] | None = None,
    grad_outputs: Tensor | None = None,
    error_model: Any = None,
    precision: int = 200,
    msg: str | None = None,
) -> PreservationReport:
    """Assert that ``after`` computes ``before``'s function on ``inputs`` at ``level``; return the report.

    Parameters
    ----------
    before, after
        Two modules or callables.  Level K takes any; O, B and R need
        :class:`~revcheck.nn.expand.ReferenceTransformer` models (the oracle knows
        only that architecture).
    inputs
        The model input (token ids ``(batch, time)``), or a tuple of positional
        arguments for other callables.
    level
        ``"K"``, ``"O"``, ``"B"`` or ``"R"`` (docs/spec.md §0).
    check_grads
        Also compare the gradients of ``sum(output * grad_outputs)`` (default
        ``grad_outputs``: seeded N(0, 1)) with respect to every parameter of
        ``before`` with the matching entries of ``after``, a parameter scaled by
        ``c`` expecting gradient / ``c``.  Levels K and O.
    certificate
        ``"auto"`` (default): ``after``'s attached growth certificate when its
        fingerprints match both models.  It gives the parameter mapping for
        gradients, the exact factors for level R and the rounded blocks for B.
        ``None`` ignores certificates.
    parameter_map
        For gradients of models without a certificate: ``{before_name:
        ParameterMap(after_name, index, factor_squared)}``.  Without either,
        parameters are matched by name and must have equal shapes.
    error_model
        Level B: a :class:`revcheck.oracle.enclosure.ErrorModel` (default: the
        one for ``after``'s dtype).
    precision
        Level R: mpmath working precision in bits.

    Raises
    ------
    FunctionNotPreservedError
        An ``AssertionError`` whose message is the evidence: at K and O
        :func:`revcheck.testing.compare_bits`' mismatch report (count, indices,
        hex, ULPs) and NaN notes; at B the bound, the worst element and any
        element outside the enclosure; at R the largest real difference.
    UsageError
        A request that cannot be checked: O, B or R on a model that is not the
        reference architecture, gradients at B or R, shapes too large for R.

    Examples
    --------
    >>> import torch
    >>> from revcheck.expand import expand_mlp
    >>> from revcheck.nn.expand import ModelConfig, ReferenceTransformer
    >>> config = ModelConfig(vocab=7, max_len=4, hidden=8, mlp=8, heads=2, qk=2, v=2, layers=1)
    >>> small = ReferenceTransformer(config)
    >>> ids = torch.tensor([[1, 2, 3, 4]])
    >>> print(assert_function_preserved(small, expand_mlp(small, 32, seed=0), ids, level="O"))
    function preserved at level O (bit-equal under the declared reduction order (NumPy oracle)): ...
    """
    __tracebackhide__ = True
    level = check_level(level)
    if level in (Level.O, Level.B, Level.R):
        for name, model in (("before", before), ("after", after)):
            try:
                check_reference(model, name)
            except UsageError as error:
                raise UsageError(
                    f"level {level} needs the reference architecture for both models: {error}"
                ) from None
    if check_grads and level in (Level.B, Level.R):
        raise UsageError(
            f"gradients are compared at levels K and O only (the level-{level} backward is not implemented); "
            "use level='O' or level='K' with check_grads=True"
        )
    resolved = resolve_certificate(before, after, certificate)
    if level == Level.K:
        report = _level_k(before, after, inputs, check_grads, resolved, parameter_map, grad_outputs)
    elif level == Level.O:
        report = _level_o(before, after, inputs, check_grads, resolved, parameter_map, grad_outputs)  # type: ignore[arg-type]
    elif level == Level.R:
        report = _level_r(before, after, inputs, resolved, precision)  # type: ignore[arg-type]
    else:
        report = _level_b(before, after, inputs, resolved, error_model)  # type: ignore[arg-type]
    if resolved is not None:
        report.lines.append(f"certificate: {resolved.transformation} (certified level {resolved.level})")
    if msg:
        report.lines.insert(0, msg)
    if not report.passed:
        raise FunctionNotPreservedError(report)
    return report


def preserved_levels(
    before: ReferenceTransformer,
    after: ReferenceTransformer,
    inputs: object,
    levels: Sequence[str] = ("K", "O"),
) -> dict[str, PreservationReport | FunctionNotPreservedError]:
    """Run several levels and keep each outcome (a report or the error): data for tables, never a verdict."""
    outcomes: dict[str, PreservationReport | FunctionNotPreservedError] = {}
    for level in levels:
        try:
            outcomes[level] = assert_function_preserved(before, after, inputs, level=level)
        except FunctionNotPreservedError as error:
            outcomes[level] = error
    return outcomes
