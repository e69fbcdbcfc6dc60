"""Generated architectures for latency data: ``ArchSpec`` -> optc IR graph.

A spec is a family (``cnn``, ``transformer``, ``mlp``), its parameters and a weight
seed. ``build`` makes the torch module, seeds its random weights (latency does not
depend on their values) and exports it through ``optc.frontend.from_torch``, so the
graphs have exactly the operator patterns of real exported models. ``sample_specs``
draws varied specs whose size keeps each model between roughly 0.2 and 50 ms on a
2-core CPU, so a dataset can be collected on the machine it describes;
``sample_large_specs`` draws the ``wide`` family (AlexNet / VGG-like, 20-400 ms).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from optc.errors import UserInputError
from optc.ir import Graph
from optc.latency import arch_cnn, arch_seq

FAMILIES: Mapping[str, tuple[Callable[[random.Random], dict[str, Any]],
                             Callable[[Mapping[str, Any]], tuple[Any, tuple[Any, ...]]],
                             Callable[[Mapping[str, Any]], float]]] = {
    "cnn": (arch_cnn.sample, arch_cnn.module, arch_cnn.macs),
    "transformer": (arch_seq.sample_transformer, arch_seq.transformer_module,
                    arch_seq.transformer_macs),
    "mlp": (arch_seq.sample_mlp, arch_seq.mlp_module, arch_seq.mlp_macs),
}
"""The families ``sample_specs`` draws."""
LARGE_FAMILIES: Mapping[str, tuple[Callable[[random.Random], dict[str, Any]],
                                   Callable[[Mapping[str, Any]], tuple[Any, tuple[Any, ...]]],
                                   Callable[[Mapping[str, Any]], float]]] = {
    "wide": (arch_cnn.sample_wide, arch_cnn.wide_module, arch_cnn.wide_macs),
}
"""Families of ``sample_large_specs`` only, so that ``sample_specs`` draws the same specs
for a seed as before they existed (the shipped dataset stays reproducible)."""
ALL_FAMILIES = {**FAMILIES, **LARGE_FAMILIES}
FAMILY_WEIGHTS: Mapping[str, float] = {"cnn": 0.5, "transformer": 0.3, "mlp": 0.2}
# Multiply-accumulates per inference: from ~0.2 ms to ~50 ms at one thread here.
MIN_MACS = 2e6
MAX_MACS = 4e8
OPSET = 17


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """One generated architecture: ``family``, its ``params`` (JSON data) and weight ``seed``."""

    family: str
    params: Mapping[str, Any]
    seed: int

    def __post_init__(self) -> None:
        if self.family not in ALL_FAMILIES:
            raise UserInputError(f"unknown architecture family {self.family!r} "
                                 f"(known: {', '.join(ALL_FAMILIES)})")

    def __hash__(self) -> int:  # params is a dict: hash the canonical key instead
        return hash(self.key())

    def key(self) -> str:
        """A stable name, ``gen:<family>:<sha256 of the canonical JSON, 16 hex>``."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return f"gen:{self.family}:{hashlib.sha256(text.encode()).hexdigest()[:16]}"

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "params": _plain(self.params), "seed": self.seed}

    @staticmethod
    def from_json(data: Any) -> ArchSpec:
        if not isinstance(data, Mapping) or not {"family", "params", "seed"} <= set(data):
            raise UserInputError(f"not an architecture spec: {str(data)[:80]}")
        return ArchSpec(str(data["family"]), dict(data["params"]), int(data["seed"]))

    def macs(self) -> float:
        """Multiply-accumulates of one inference, from the parameters alone (no build)."""
        return ALL_FAMILIES[self.family][2](self.params)

    def build(self) -> Graph:
        """The architecture as an optc graph; the same spec always gives the same graph."""
        import torch

        from optc.frontend import from_torch

        make = ALL_FAMILIES[self.family][1]
        # The fork keeps the caller's global torch RNG untouched by the weight seeding.
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's own deprecation chatter
            torch.manual_seed(self.seed)
            module, example = make(self.params)
            graph = from_torch(module, example, input_names=["input"], output_names=["output"],
                               opset=OPSET)
        return graph.replace(name=self.key())


def _plain(value: Any) -> Any:
    """JSON-shaped copy (tuples become lists) so keys agree before and after a round trip."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def sample_specs(n: int, seed: int) -> list[ArchSpec]:
    """``n`` distinct specs drawn from the families, sized for this kind of machine."""
    rng = random.Random(seed)
    families, weights = list(FAMILY_WEIGHTS), list(FAMILY_WEIGHTS.values())
    specs: dict[str, ArchSpec] = {}
    while len(specs) < n:
        family = rng.choices(families, weights)[0]
        spec_seed = rng.randrange(2 ** 31)
        spec = ArchSpec(family, FAMILIES[family][0](random.Random(spec_seed)), spec_seed)
        if MIN_MACS <= spec.macs() <= MAX_MACS:
            specs.setdefault(spec.key(), spec)
    return list(specs.values())


LARGE_MIN_MACS = 5e8
LARGE_MAX_MACS = 1.2e10
"""``sample_large_specs``: ~20 to ~400 ms on 2 cores here, the range of AlexNet to VGG-19."""


def sample_large_specs(n: int, seed: int) -> list[ArchSpec]:
    """``n`` distinct ``wide`` specs (large convolutions, big fully connected layers) sized
    like the large real CNNs, which ``sample_specs``'s small models do not reach."""
    rng = random.Random(seed)
    specs: dict[str, ArchSpec] = {}
    while len(specs) < n:
        spec_seed = rng.randrange(2 ** 31)
        spec = ArchSpec("wide", arch_cnn.sample_wide(random.Random(spec_seed)), spec_seed)
        if LARGE_MIN_MACS <= spec.macs() <= LARGE_MAX_MACS:
            specs.setdefault(spec.key(), spec)
    return list(specs.values())


def reference_specs() -> list[ArchSpec]:
    """The 10 fixed reference models every device is measured on (HELP's device embedding).

    Chosen to span the regimes a device can be good or bad at: dense and depthwise
    convolution at small and large resolution, large kernels, attention at short and
    long sequence lengths, and weight-bound MLPs at batch 1 and compute-bound at 64.
    """
    return [ArchSpec(family, params, 1000 + index)
            for index, (family, params) in enumerate(_REFERENCE)]


_REFERENCE: tuple[tuple[str, dict[str, Any]], ...] = (
    ("cnn", {"resolution": 224, "stem": 32, "stem_kernel": 3, "maxpool": False, "pool": "avg",
             "act": "relu6", "classes": 1000,
             "blocks": [["mbconv", 3, 2, 24, 1], ["mbconv", 3, 2, 32, 6], ["mbconv", 3, 1, 32, 6],
                        ["mbconv", 5, 2, 64, 6], ["mbconv", 3, 2, 96, 6]]}),
    ("cnn", {"resolution": 64, "stem": 32, "stem_kernel": 3, "maxpool": False, "pool": "avg",
             "act": "relu", "classes": 10,
             "blocks": [["res", 3, 1, 32, 1], ["res", 3, 2, 64, 1], ["res", 3, 2, 128, 1]]}),
    ("cnn", {"resolution": 128, "stem": 16, "stem_kernel": 7, "maxpool": True, "pool": "max",
             "act": "hardswish", "classes": 100,
             "blocks": [["dw", 7, 1, 32, 1], ["dw", 5, 2, 64, 1], ["dw", 7, 2, 128, 1]]}),
    ("cnn", {"resolution": 160, "stem": 24, "stem_kernel": 5, "maxpool": True, "pool": "avg",
             "act": "silu", "classes": 1000,
             "blocks": [["bottleneck", 3, 1, 64, 1], ["bottleneck", 3, 2, 128, 1],
                        ["bottleneck", 3, 2, 256, 1]]}),
    ("cnn", {"resolution": 32, "stem": 32, "stem_kernel": 3, "maxpool": False, "pool": "avg",
             "act": "relu", "classes": 10,
             "blocks": [["conv", 3, 1, 64, 1], ["conv", 3, 2, 128, 1], ["conv", 1, 1, 256, 1]]}),
    ("transformer", {"seq": 32, "hidden": 128, "heads": 4, "layers": 2, "ffn": 4, "act": "gelu",
                     "pre_norm": True, "vocab": 1000, "classes": 2}),
    ("transformer", {"seq": 128, "hidden": 256, "heads": 4, "layers": 2, "ffn": 4,
                     "act": "gelu", "pre_norm": False, "vocab": 0, "classes": 10}),
    ("transformer", {"seq": 256, "hidden": 64, "heads": 2, "layers": 3, "ffn": 2, "act": "relu",
                     "pre_norm": True, "vocab": 0, "classes": 10}),
    ("mlp", {"batch": 1, "features": 1024, "hidden": [2048, 2048, 1024], "act": "relu",
             "norm": False, "classes": 1000}),
    ("mlp", {"batch": 64, "features": 256, "hidden": [512, 512], "act": "gelu", "norm": True,
             "classes": 10}),
)
