"""What the certificate cannot see, each demonstrated by a test, and the instruction-level Triton check.

:data:`BLIND_SPOTS` is the honest list.  Every entry names the test in
``tests/test_mulfree_blind_spots.py`` that shows the blind spot happening (an
op that multiplies and is NOT reported) and what to do about it.

:func:`check_triton_kernels` compiles revcheck's own Triton kernels
(:mod:`revcheck.kernels.triton_pam`) for a CUDA target without a GPU -- Triton
lowers to PTX with its bundled LLVM and to SASS with its bundled ``ptxas`` /
``nvdisasm`` -- and scans the code for float multiply instructions (PTX
``mul/mad/fma/div/rcp/sqrt/rsqrt/ex2/lg2/sin/cos/tanh`` on ``f16/bf16/f32/f64``;
SASS ``FMUL/FFMA/HMUL2/HFMA2/DMUL/DFMA/MUFU``).  Integer multiplies (address
arithmetic: ``mul.wide.s32``, ``IMAD``) are allowed.  Level K for the named
target (the code a GPU of that architecture would run), not executed here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from revcheck.errors import UsageError

__all__ = [
    "BLIND_SPOTS",
    "TRITON_OPS",
    "BlindSpot",
    "KernelCheck",
    "KernelMultiplyError",
    "TritonCompileError",
    "assert_triton_kernels_multiplication_free",
    "check_triton_kernels",
]


@dataclass(frozen=True)
class BlindSpot:
    """One thing the certificate does not see."""

    name: str
    unseen: str
    why: str
    remedy: str
    test: str


_TESTS = "tests/test_mulfree_blind_spots.py"

BLIND_SPOTS: tuple[BlindSpot, ...] = (
    BlindSpot(
        "host-scalars",
        "Python arithmetic on values taken to the host: `loss.item() * 3.0`, a float learning-rate schedule",
        "a dispatch mode sees tensor ops only; `.item()` appears as aten::_local_scalar_dense (counted in "
        "Report.escapes), what Python does with the number afterwards is invisible; make_fx cannot trace it",
        "keep step arithmetic on tensors; compute host constants in integer/rational arithmetic and declare "
        "them (PAAdam.host_constants); check Report.escapes is the number you expect",
        f"{_TESTS}::test_python_scalar_arithmetic_is_not_seen",
    ),
    BlindSpot(
        "native-extensions",
        "native code that is not a registered op: a pybind/C++ extension, NumPy or ctypes writing into a "
        "tensor's memory (`t.numpy()`)",
        "it never enters the dispatcher: nothing is reported when it writes into a given tensor (at most the "
        "allocation, e.g. empty_like, when it returns a new one)",
        "register the kernel with torch.library: it then appears by name (unknown until you declare it, "
        "after certifying its machine code)",
        f"{_TESTS}::test_native_code_outside_the_dispatcher_is_not_seen",
    ),
    BlindSpot(
        "other-threads",
        "ops run in a thread other than the one that entered the mode",
        "dispatch modes are thread-local state",
        "run the certified step in one thread (CPU autograd runs backward in the caller's thread: seen); "
        "enter a MulFreeMode in each worker thread",
        f"{_TESTS}::test_ops_in_another_thread_are_not_seen",
    ),
    BlindSpot(
        "modes-disabled",
        "ops run while dispatch modes are disabled (torch._C._DisableTorchDispatch, _disable_current_modes)",
        "the mode is switched off for that region by design",
        "do not disable modes inside a certified step; search the code for these guards",
        f"{_TESTS}::test_ops_with_modes_disabled_are_not_seen",
    ),
    BlindSpot(
        "compiled-kernels",
        "instructions inside a kernel: a Triton kernel launched directly, torch.compile'd code, the CPU add "
        "kernel's fused multiply-add with multiplier exactly 1",
        "the certificate is semantic, at the level of aten ops; a Triton launch is not an aten op at all",
        "certify the compiled code: check_triton_kernels() scans revcheck's kernels' PTX and SASS; register "
        "kernels as ops so they at least appear by name",
        f"{_TESTS}::test_a_triton_kernel_launch_is_not_seen",
    ),
    BlindSpot(
        "trace-leaves",
        "the static proof treats registered PA ops as leaves (their implementations branch on data, which "
        "make_fx cannot follow)",
        "make_fx runs a registered op's implementation untraced",
        "the runtime MulFreeMode(descend=True) checks every aten op inside them, and the bit-exact properties"
        " "
        "check what they compute",
        f"{_TESTS}::test_static_proof_does_not_look_inside_registered_ops",
    ),
)


# ---- Triton ----------------------------------------------------------------------------------------------

TRITON_OPS = ("pam_mul", "pam_div", "pam_mul_grad", "pa_log2", "pa_exp2", "pam_matmul")
DEFAULT_TARGET = ("cuda", 90, 32)


class TritonCompileError(AssertionError):
    """A kernel that should be certified did not compile for the target: nothing about its code is known."""


class KernelMultiplyError(AssertionError):
    """A compiled kernel contains float multiply (or divide, or special-function) instructions."""


@dataclass(frozen=True)
class KernelCheck:
    """One kernel compiled for one target: the offending instructions, or why it could not be checked."""

    op: str
    format: str
    mode: str
    status: str  # "ok" (compiled and scanned), "compile-error"
    ptx_offending: tuple[str, ...] = ()
    sass_offending: tuple[str, ...] | None = ()
    error: str = ""
    target: tuple[str, int, int] = DEFAULT_TARGET
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def multiplication_free(self) -> bool:
        return self.status == "ok" and not self.ptx_offending and not self.sass_offending

    def describe(self) -> str:
        where = f"{self.op} [{self.format}, {self.mode}] for {self.target[0]} sm_{self.target[1]}"
        if self.status != "ok":
            return f"{where}: did not compile: {self.error}"
        sass = (
            "not scanned (no nvdisasm)"
            if self.sass_offending is None
            else (", ".join(self.sass_offending) or "none")
        )
        return (
            f"{where}: float instructions in PTX: {', '.join(self.ptx_offending) or 'none'}; in SASS: {sass}"
        )


def _kernel_source(source: str | os.PathLike[str] | None) -> str:
    if source is not None:
        return os.fspath(source)
    import importlib.util

    spec = importlib.util.find_spec("revcheck.kernels.triton_pam")
    if spec is None or spec.origin is None:
        raise UsageError(
            "revcheck.kernels.triton_pam is not importable; install triton (pip install 'revcheck[triton]')"
        )
    return spec.origin


def compile_in_subprocess(request: dict[str, Any], *, timeout: float = 600) -> list[dict[str, Any]]:
    """Run :mod:`revcheck.mulfree._triton_compile` in a fresh interpreter-free process; its JSON results."""
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "0"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    completed = subprocess.run(
        [sys.executable, "-m", "revcheck.mulfree._triton_compile"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the Triton compile subprocess failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def triton_available() -> str | None:
    """None if Triton can compile for CUDA here, else why not (the reason to skip with)."""
    try:
        import triton  # noqa: F401
        from triton.backends.compiler import GPUTarget  # noqa: F401
    except ImportError as error:
        return f"triton is not installed ({error})"
    return None


def check_triton_kernels(
    *,
    ops: Iterable[str] = TRITON_OPS,
    formats: Sequence[str] = ("fp32", "bf16", "fp16", "fp64"),
    modes: Sequence[str] = ("ieee",),
    target: tuple[str, int, int] = DEFAULT_TARGET,
    source: str | os.PathLike[str] | None = None,
) -> list[KernelCheck]:
    """Compile each kernel of ``source`` (default: revcheck.kernels.triton_pam) for ``target`` and scan it.

    Returns one :class:`KernelCheck` per (op, format, mode); a kernel that does
    not compile is reported with ``status="compile-error"`` (never as clean).

    Raises
    ------
    UsageError
        For an unknown op, or when triton is not installed.
    """
    reason = triton_available()
    if reason:
        raise UsageError(f"check_triton_kernels: {reason}")
    ops = tuple(ops)
    unknown = [op for op in ops if op not in TRITON_OPS]
    if unknown:
        raise UsageError(f"unknown Triton ops {unknown}; revcheck's kernels are {', '.join(TRITON_OPS)}")
    requests = [{"op": op, "format": f, "mode": m} for op in ops for f in formats for m in modes]
    results = compile_in_subprocess(
        {"source": _kernel_source(source), "target": list(target), "kernels": requests}
    )
    return [
        KernelCheck(
            op=r["op"],
            format=r["format"],
            mode=r["mode"],
            status=r["status"],
            ptx_offending=tuple(r.get("ptx_offending") or ()),
            sass_offending=None
            if r.get("sass_offending") is None and r["status"] == "ok"
            else tuple(r.get("sass_offending") or ()),
            error=r.get("error", ""),
            target=target,
        )
        for r in results
    ]


def assert_triton_kernels_multiplication_free(checks: Sequence[KernelCheck]) -> None:
    """Raise :class:`TritonCompileError` (a kernel did not compile) or :class:`KernelMultiplyError`."""
    __tracebackhide__ = True
    failed = [c for c in checks if c.status != "ok"]
    if failed:
        raise TritonCompileError(
            f"{len(failed)} of {len(checks)} kernels did not compile, so their code is not certified:\n"
            + "\n".join(c.describe() for c in failed[:5])
        )
    dirty = [c for c in checks if not c.multiplication_free]
    if dirty:
        raise KernelMultiplyError("\n".join(c.describe() for c in dirty[:5]))
