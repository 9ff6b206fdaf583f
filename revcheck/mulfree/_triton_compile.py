"""Compile Triton kernels to PTX and SASS for a GPU target without a GPU, and scan them (a subprocess).

Run as ``python -m revcheck.mulfree._triton_compile`` with a JSON request on
stdin; prints a JSON list of results.  It must run in a process where Triton
was imported WITHOUT its interpreter (``TRITON_INTERPRET=0``): in an
interpreted process Triton's own standard library is interpreted and cannot
be compiled.  :func:`revcheck.mulfree.blind_spots.check_triton_kernels` starts it.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from typing import Any

#: Float multiply, fused multiply-add, divide, reciprocal and special-function instructions in PTX.
PTX_FLOAT_MULTIPLY = re.compile(
    r"^\s*(?:@%?!?\w+\s+)?((?:mul|mad|fma|div|rcp|sqrt|rsqrt|ex2|lg2|sin|cos|tanh)(?:\.[a-z0-9]+)*"
    r"\.(?:f16|f16x2|bf16|bf16x2|f32|f64))\b",
    re.MULTILINE,
)
#: The same in SASS: FMUL/FFMA (fp32), HMUL2/HFMA2 (fp16/bf16), DMUL/DFMA (fp64), MUFU (special functions).
SASS_FLOAT_MULTIPLY = re.compile(r"\b((?:FMUL|FFMA|HMUL2?|HFMA2?|DMUL|DFMA|MUFU)(?:\.[A-Z0-9_]+)*)\b")


def scan(text: str, pattern: re.Pattern[str]) -> list[str]:
    """The offending instruction mnemonics in ``text``, in order of appearance."""
    return [match.group(1) for match in pattern.finditer(text)]


def _load(path: str, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and triton look the module up by name
    spec.loader.exec_module(module)
    return module


def _revcheck_spec(module: Any, request: dict[str, Any]) -> tuple[Any, dict[str, str], dict[str, Any]]:
    import triton.language as tl

    from revcheck import formats
    from revcheck.oracle.pam import accumulator_format

    fmt = formats.get(request["format"])
    ftz = request.get("mode", "ieee") == "ftz"
    c = module._constants(fmt)
    pointer = f"*i{fmt.width}"
    if request["op"] == "pam_matmul":
        acc = accumulator_format(fmt)
        ca = module._constants(acc)
        constexprs = {
            "IN_MB": c.mantissa_bits,
            "IN_BIAS": c.bias,
            "IN_EXP_MAX": c.exp_max,
            "IN_FN": c.fn,
            "ACC_MB": ca.mantissa_bits,
            "ACC_BIAS": ca.bias,
            "ACC_EXP_MAX": ca.exp_max,
            "ACC_MAX_FINITE": ca.max_finite,
            "ACC_OVERFLOW": ca.overflow,
            "ACC_SIGN_MIN": ca.sign_min,
            "ACC_NAN": ca.nan,
            "ACC_INT": getattr(tl, acc.int_dtype.name),
            "ACC_FLOAT": getattr(tl, acc.numpy_float_name or ""),
            "FTZ": ftz,
            "BLOCK_M": 32,
            "BLOCK_N": 32,
        }
        scalars = [
            "M",
            "N",
            "K",
            "stride_ab",
            "stride_am",
            "stride_ak",
            "stride_bb",
            "stride_bk",
            "stride_bn",
            "stride_cb",
            "stride_cm",
            "stride_cn",
        ]
        signature = {"a_ptr": pointer, "b_ptr": pointer, "c_ptr": f"*fp{acc.width}"}
        signature.update({name: "i32" for name in scalars})
        return module._pam_matmul_kernel, {**signature, **{k: "constexpr" for k in constexprs}}, constexprs
    constexprs = {
        "MB": c.mantissa_bits,
        "EB": c.exponent_bits,
        "BIAS": c.bias,
        "EXP_MAX": c.exp_max,
        "FN": c.fn,
        "MAX_FINITE": c.max_finite,
        "OVERFLOW": c.overflow,
        "SIGN_MIN": c.sign_min,
        "NAN": c.nan,
        "FTZ": ftz,
        "OP": module._OP_CODES[request["op"]],
        "BLOCK": 1024,
    }
    signature = {"a_ptr": pointer, "b_ptr": pointer, "out_ptr": pointer, "n": "i32"}
    return module._elementwise_kernel, {**signature, **{k: "constexpr" for k in constexprs}}, constexprs


def compile_and_scan(request: dict[str, Any]) -> list[dict[str, Any]]:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    target = GPUTarget(*request["target"])
    module = _load(request["source"], "revcheck_mulfree_compiled_kernels")
    results = []
    for kernel_request in request["kernels"]:
        entry = {key: kernel_request.get(key) for key in ("op", "format", "mode", "kernel")}
        try:
            if "kernel" in kernel_request:
                fn = getattr(module, kernel_request["kernel"])
                signature, constexprs = kernel_request["signature"], kernel_request.get("constexprs", {})
            else:
                fn, signature, constexprs = _revcheck_spec(module, kernel_request)
            compiled = triton.compile(
                ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                target=target,
                options={"enable_fp_fusion": False},
            )
            ptx = compiled.asm["ptx"]
            entry["ptx_offending"] = scan(ptx, PTX_FLOAT_MULTIPLY)
            try:
                entry["sass_offending"] = scan(compiled.asm["sass"], SASS_FLOAT_MULTIPLY)
            except Exception as error:  # nvdisasm missing: PTX only
                entry["sass_offending"] = None
                entry["sass_error"] = f"{type(error).__name__}: {error}"
            entry["status"] = "ok"
        except Exception as error:
            root: BaseException = error
            while root.__cause__ is not None:  # Triton wraps the real reason in CompilationErrors
                root = root.__cause__
            entry["status"] = "compile-error"
            entry["error"] = f"{type(root).__name__}: {root}"
            entry["error_detail"] = str(error)[:2000]
        results.append(entry)
    return results


def main() -> int:
    request = json.loads(sys.stdin.read())
    print(json.dumps(compile_and_scan(request)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
