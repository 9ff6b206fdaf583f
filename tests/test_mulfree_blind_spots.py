"""Each blind spot of the certificate, demonstrated: a float multiply that happens and is NOT reported.

Every test here is named by an entry of revcheck.mulfree.BLIND_SPOTS; the
Triton tests at the end certify (or fail to certify) revcheck's own kernels at
the instruction level, and check that the instruction scan catches a planted
float multiply.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from revcheck.mulfree import BLIND_SPOTS, Kind, MulFreeMode, UnknownOpError, prove_step
from revcheck.mulfree import blind_spots as spots
from revcheck.mulfree._triton_compile import PTX_FLOAT_MULTIPLY, SASS_FLOAT_MULTIPLY, scan
from revcheck.nn import mulfree as M

HERE = Path(__file__)


def test_every_blind_spot_names_a_test_in_this_file() -> None:
    defined = set(re.findall(r"^def (test_\w+)", HERE.read_text(), re.MULTILINE))
    for spot in BLIND_SPOTS:
        path, _, name = spot.test.partition("::")
        assert path == f"tests/{HERE.name}" and name in defined, spot


def test_python_scalar_arithmetic_is_not_seen() -> None:
    x = torch.full((4,), 1.5)
    with MulFreeMode(record=True) as mode:
        host = x.sum().item() * 3.0  # a float multiply on the host
    assert host == 18.0
    assert mode.report.count(kind=Kind.MULTIPLY) == 0  # unseen ...
    assert mode.report.escapes == 1  # ... but the value that left for the host is counted


def test_native_code_outside_the_dispatcher_is_not_seen() -> None:
    x = torch.full((4,), 1.5)
    with MulFreeMode(record=True) as mode:
        np.multiply(x.numpy(), 3.0, out=x.numpy())  # native code writing into the tensor's memory
    assert torch.equal(x, torch.full((4,), 4.5))
    assert mode.report.count(kind=Kind.MULTIPLY) == 0

    # The remedy: the same kernel registered as an op is seen, by name, as unknown until declared.
    op = torch.library.custom_op(
        "revcheck_blind::numpy_triple",
        lambda t: torch.from_numpy(t.numpy() * 3.0),
        mutates_args=(),
        schema="(Tensor t) -> Tensor",
    )
    with pytest.raises(UnknownOpError, match="revcheck_blind::numpy_triple"), MulFreeMode():
        op(x)


@pytest.mark.slow
def test_a_compiled_pybind_extension_is_not_seen() -> None:
    from torch.utils.cpp_extension import load_inline

    source = (
        "void triple_(torch::Tensor t) { auto* p = t.data_ptr<float>();"
        " for (int64_t i = 0; i < t.numel(); ++i) p[i] *= 3.0f; }"
    )
    extension = load_inline("revcheck_blind_triple", cpp_sources=[source], functions=["triple_"])
    x = torch.full((4,), 1.5)
    with MulFreeMode(record=True) as mode:
        extension.triple_(x)
    assert torch.equal(x, torch.full((4,), 4.5))
    assert mode.report.count() == 0  # not even an op: the extension wrote into a given tensor


def test_ops_in_another_thread_are_not_seen() -> None:
    x = torch.full((4,), 1.5)
    results = []
    with MulFreeMode(record=True) as mode:
        worker = threading.Thread(target=lambda: results.append(x * 3.0))
        worker.start()
        worker.join()
    assert torch.equal(results[0], torch.full((4,), 4.5))
    assert mode.report.count() == 0


def test_ops_with_modes_disabled_are_not_seen() -> None:
    from torch.utils._python_dispatch import _disable_current_modes

    x = torch.full((4,), 1.5)
    with MulFreeMode(record=True) as mode:
        with _disable_current_modes():
            y = x * 3.0
        z = x * 3.0
    assert torch.equal(y, z)
    assert mode.report.count(kind=Kind.MULTIPLY) == 1  # only the second multiply


def test_a_triton_kernel_launch_is_not_seen() -> None:
    triton = pytest.importorskip("triton")
    import triton.language as tl

    interpreted = bool(
        getattr(getattr(triton, "knobs", None), "runtime", None) and triton.knobs.runtime.interpret
    )
    if not interpreted and not torch.cuda.is_available():
        pytest.skip("Triton runs here only under TRITON_INTERPRET=1 (no CUDA device)")

    @triton.jit
    def triple(x_ptr, n, BLOCK: tl.constexpr):
        offsets = tl.arange(0, BLOCK)
        inside = offsets < n
        tl.store(x_ptr + offsets, tl.load(x_ptr + offsets, mask=inside) * 3.0, mask=inside)

    x = torch.full((4,), 1.5, device="cpu" if interpreted else "cuda")
    with MulFreeMode(record=True) as mode:
        triple[(1,)](x, 4, BLOCK=4)
    assert torch.equal(x.cpu(), torch.full((4,), 4.5))
    assert mode.report.count(kind=Kind.MULTIPLY) == 0


def test_static_proof_does_not_look_inside_registered_ops() -> None:
    scaled = torch.library.custom_op(
        "revcheck_blind::times_three", lambda t: t * 3.0, mutates_args=(), schema="(Tensor t) -> Tensor"
    )
    w = torch.nn.Parameter(torch.ones(3))
    optimizer = M.PAAdam([w], lr=0.1)

    def step() -> None:
        optimizer.zero_grad()
        M.pa_mean(scaled(w.detach()) + w, -1).backward()
        optimizer.step()

    # Declared as certified, the op is a leaf: the multiply inside it is not seen by the static proof.
    proof = prove_step(step, declared={"revcheck_blind::times_three": "trusted (wrongly)"})
    assert proof.multiplication_free
    # The PA ops are leaves too, and certified by the runtime mode, which descends into them:
    x = torch.randn(2, 4)
    with MulFreeMode(record=True) as mode:
        M.pa_softmax(x)
    assert mode.report.count(kind=Kind.PA) == 1 and mode.report.count(kind=Kind.INTEGER) > 10


# ---- Triton kernels at the instruction level -----------------------------------------------------------


def test_instruction_patterns() -> None:
    ptx = "\tmul.wide.s32 %rd5, %r8, 4;\n\tmad.lo.s32 %r1, %r2, %r3, %r4;\n\tadd.f32 %f1, %f2, %f3;\n"
    assert scan(ptx, PTX_FLOAT_MULTIPLY) == []
    dirty = (
        "\tmul.f32 %f1, %f2, %f3;\n\t@%p1 fma.rn.f32 %f4, %f1, %f2, %f3;\n\tex2.approx.ftz.f32 %f5, %f4;\n"
    )
    assert scan(dirty, PTX_FLOAT_MULTIPLY) == ["mul.f32", "fma.rn.f32", "ex2.approx.ftz.f32"]
    assert scan(
        "IMAD.MOV.U32 R1, RZ, RZ, R2 ;\nFFMA R3, R1, R2, R3 ;\nMUFU.EX2 R4, R3 ;", SASS_FLOAT_MULTIPLY
    ) == ["FFMA", "MUFU.EX2"]


def _skip_without_triton() -> None:
    reason = spots.triton_available()
    if reason:
        pytest.skip(reason)


_PLANTED = """

@triton.jit
def _planted_square_kernel(x_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < n
    x = tl.load(x_ptr + offsets, mask=inside)
    tl.store(x_ptr + offsets, x * x, mask=inside)
"""


@pytest.fixture(scope="module")
def patched_kernels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """revcheck's Triton kernels plus a planted multiply (to show the scan catches one)."""
    spec = importlib.util.find_spec("revcheck.kernels.triton_pam")
    if spec is None or spec.origin is None:
        pytest.skip("revcheck.kernels.triton_pam is not importable")
    source = Path(spec.origin).read_text()
    path = tmp_path_factory.mktemp("triton") / "triton_pam_planted.py"
    path.write_text(source + _PLANTED)
    return path


def test_revcheck_triton_kernels_compile_and_run_no_float_multiply() -> None:
    # Found by this test: _msb_position re-annotated a constexpr inside static_range, which only the
    # interpreter accepted; the kernels now compile for sm_90 (docs/spec.md §7).
    _skip_without_triton()
    checks = spots.check_triton_kernels(ops=("pam_mul", "pam_matmul"), formats=("fp32",))
    spots.assert_triton_kernels_multiplication_free(checks)


def test_triton_kernels_have_no_float_multiply_and_the_scan_catches_a_planted_one(
    patched_kernels: Path,
) -> None:
    _skip_without_triton()
    checks = spots.check_triton_kernels(
        ops=("pam_mul", "pa_exp2", "pam_matmul"), formats=("fp32",), source=patched_kernels
    )
    spots.assert_triton_kernels_multiplication_free(checks)  # PTX and SASS clean for sm_90
    assert all(c.sass_offending is not None for c in checks), "SASS was not scanned"
    planted = spots.compile_in_subprocess(
        {
            "source": os.fspath(patched_kernels),
            "target": list(spots.DEFAULT_TARGET),
            "kernels": [
                {
                    "kernel": "_planted_square_kernel",
                    "signature": {"x_ptr": "*fp32", "n": "i32", "BLOCK": "constexpr"},
                    "constexprs": {"BLOCK": 128},
                }
            ],
        }
    )
    assert planted[0]["status"] == "ok" and "mul.rn.f32" in planted[0]["ptx_offending"]
    assert any(op.startswith("FMUL") for op in planted[0]["sass_offending"])


@pytest.mark.slow
def test_triton_kernels_every_op_format_and_mode(patched_kernels: Path) -> None:
    _skip_without_triton()
    checks = spots.check_triton_kernels(modes=("ieee", "ftz"), source=patched_kernels)
    spots.assert_triton_kernels_multiplication_free(checks)
    assert len(checks) == len(spots.TRITON_OPS) * 4 * 2


def test_triton_check_rejects_unknown_ops() -> None:
    _skip_without_triton()
    with pytest.raises(spots.UsageError, match="unknown Triton ops"):
        spots.check_triton_kernels(ops=("pam_softmax",))
