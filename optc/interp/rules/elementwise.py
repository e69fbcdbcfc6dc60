"""Element-wise unary math: Abs, Sqrt, Exp, Log, trigonometry, Erf, Round, Sign, ..."""

from __future__ import annotations

import torch

from optc.interp.context import Rule, RuleCall
from optc.interp.rules.common import unary


def _reciprocal(x: torch.Tensor) -> torch.Tensor:
    return 1.0 / x if x.is_floating_point() else torch.reciprocal(x)


def _identity(call: RuleCall) -> list[torch.Tensor]:
    return [call.x(0)]


def _det(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.det(x)


RULES: dict[str, Rule] = {
    "Abs": unary(torch.abs),
    "Neg": unary(torch.neg),
    "Reciprocal": unary(_reciprocal),
    "Floor": unary(torch.floor),
    "Ceil": unary(torch.ceil),
    "Round": unary(torch.round),  # half to even, as ONNX asks
    "Sqrt": unary(torch.sqrt),
    "Exp": unary(torch.exp),
    "Log": unary(torch.log),
    "Sin": unary(torch.sin),
    "Cos": unary(torch.cos),
    "Tan": unary(torch.tan),
    "Asin": unary(torch.asin),
    "Acos": unary(torch.acos),
    "Atan": unary(torch.atan),
    "Sinh": unary(torch.sinh),
    "Cosh": unary(torch.cosh),
    "Asinh": unary(torch.asinh),
    "Acosh": unary(torch.acosh),
    "Atanh": unary(torch.atanh),
    "Erf": unary(torch.erf),
    "Sign": unary(torch.sign),
    "Det": unary(_det),
    "Identity": _identity,
}
