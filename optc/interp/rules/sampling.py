"""Random generators: RandomNormal/Uniform(Like) and Bernoulli.

Each node draws from its own torch generator: seeded from the ``seed`` attribute when
given (repeatable runs), from fresh entropy otherwise. The values cannot match
onnxruntime's, which uses another generator; shapes, dtypes and distributions do.
"""

from __future__ import annotations

import torch

from optc.interp.context import Rule, RuleCall
from optc.interp.dtypes import torch_dtype_from_onnx

_FLOAT = 1  # TensorProto.FLOAT, the default ``dtype`` of the generators


def _generator(call: RuleCall) -> torch.Generator:
    generator = torch.Generator()
    seed = call.attr("seed")
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed))
    return generator


def _target(call: RuleCall, like: torch.Tensor | None) -> tuple[list[int], torch.dtype]:
    """Output shape and dtype: from the attributes, or from the input of a *Like op."""
    code = call.attr("dtype")
    if like is None:
        return list(call.attr("shape")), torch_dtype_from_onnx(int(code or _FLOAT))
    dtype = like.dtype if code is None else torch_dtype_from_onnx(int(code))
    return list(like.shape), dtype


def _normal(like: bool) -> Rule:
    def rule(call: RuleCall) -> list[torch.Tensor]:
        shape, dtype = _target(call, call.x(0) if like else None)
        sample = torch.randn(shape, generator=_generator(call), dtype=torch.float64)
        mean, scale = float(call.attr("mean", 0.0)), float(call.attr("scale", 1.0))
        return [(sample * scale + mean).to(dtype)]

    return rule


def _uniform(like: bool) -> Rule:
    def rule(call: RuleCall) -> list[torch.Tensor]:
        shape, dtype = _target(call, call.x(0) if like else None)
        sample = torch.rand(shape, generator=_generator(call), dtype=torch.float64)
        low, high = float(call.attr("low", 0.0)), float(call.attr("high", 1.0))
        return [(sample * (high - low) + low).to(dtype)]

    return rule


def _bernoulli(call: RuleCall) -> list[torch.Tensor]:
    p = call.x(0)
    code = call.attr("dtype")
    dtype = p.dtype if code is None else torch_dtype_from_onnx(int(code))
    draws = torch.rand(p.shape, generator=_generator(call), dtype=torch.float64)
    return [(draws < p.to(torch.float64)).to(dtype)]


RULES: dict[str, Rule] = {
    "RandomNormal": _normal(like=False),
    "RandomNormalLike": _normal(like=True),
    "RandomUniform": _uniform(like=False),
    "RandomUniformLike": _uniform(like=True),
    "Bernoulli": _bernoulli,
}
