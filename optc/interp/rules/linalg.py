"""Matrix products: Gemm, MatMul, MatMulInteger, Einsum."""

from __future__ import annotations

import torch

from optc.interp.context import Rule, RuleCall


def _gemm(call: RuleCall) -> list[torch.Tensor]:
    a, b, c = call.x(0), call.x(1), call.input(2)
    if call.attr("transA", 0):
        a = a.t()
    if call.attr("transB", 0):
        b = b.t()
    alpha, beta = float(call.attr("alpha", 1.0)), float(call.attr("beta", 1.0))
    if c is not None and beta != 0.0 and a.is_floating_point():
        # One fused BLAS call computing alpha*A@B + beta*C, as onnxruntime does.
        return [torch.addmm(c, a, b, beta=beta, alpha=alpha)]
    y = a @ b
    if alpha != 1.0:
        y = y * alpha
    if c is not None and beta != 0.0:
        y = y + (c * beta if beta != 1.0 else c)
    return [y]


def _matmul(call: RuleCall) -> list[torch.Tensor]:
    a, b = call.x(0), call.x(1)
    if not a.is_floating_point():  # torch's integer matmul is int64-only on some paths
        return [torch.matmul(a.to(torch.int64), b.to(torch.int64)).to(a.dtype)]
    return [torch.matmul(a, b)]


def _matmul_integer(call: RuleCall) -> list[torch.Tensor]:
    a, b = call.x(0).to(torch.int64), call.x(1).to(torch.int64)
    a_zero, b_zero = call.input(2), call.input(3)
    if a_zero is not None:
        # A per-row zero point is a column vector over A's rows.
        a = a - (a_zero.to(torch.int64).unsqueeze(-1) if a_zero.dim() == 1 else a_zero)
    if b_zero is not None:
        b = b - b_zero.to(torch.int64)
    return [torch.matmul(a, b).to(torch.int32)]


def _einsum(call: RuleCall) -> list[torch.Tensor]:
    equation = str(call.attr("equation")).replace(" ", "")
    return [torch.einsum(equation, *[t for t in call.inputs if t is not None])]


RULES: dict[str, Rule] = {
    "Gemm": _gemm,
    "MatMul": _matmul,
    "MatMulInteger": _matmul_integer,
    "Einsum": _einsum,
}
