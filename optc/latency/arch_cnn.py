"""Convolutional networks for the latency dataset: sampled parameters -> torch module.

Blocks after the common mobile and server designs: plain conv (VGG), basic residual
(ResNet-18/34), bottleneck (ResNet-50), depthwise separable (MobileNet v1) and the
inverted residual with expansion (MobileNet v2, EfficientNet). BatchNorm is left in:
the exporter folds it into the convolution, as it does for real models.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

BLOCKS = ("conv", "res", "bottleneck", "dw", "mbconv")
ACTIVATIONS = ("relu", "relu6", "hardswish", "silu")
KERNELS = (1, 3, 5, 7)


def activation(name: str) -> nn.Module:
    return {"relu": nn.ReLU(), "relu6": nn.ReLU6(), "hardswish": nn.Hardswish(),
            "silu": nn.SiLU(), "gelu": nn.GELU()}[name]


def conv_bn(cin: int, cout: int, kernel: int, stride: int, act: str | None,
            groups: int = 1) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups,
                                         bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(activation(act))
    return nn.Sequential(*layers)


class Residual(nn.Module):
    """``body(x) + shortcut(x)``: the shortcut is the identity or a strided 1x1 projection."""

    def __init__(self, body: nn.Module, shortcut: nn.Module | None, act: str | None) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut
        self.act = activation(act) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.act(self.body(x) + skip)


def block(kind: str, cin: int, cout: int, kernel: int, stride: int, expand: int,
          act: str) -> nn.Module:
    """One block of ``kind`` (see ``BLOCKS``) from ``cin`` to ``cout`` channels."""
    if kind == "conv":
        return conv_bn(cin, cout, kernel, stride, act)
    if kind == "dw":
        return nn.Sequential(conv_bn(cin, cin, kernel, stride, act, groups=cin),
                             conv_bn(cin, cout, 1, 1, act))
    shortcut = None if stride == 1 and cin == cout else conv_bn(cin, cout, 1, stride, None)
    if kind == "res":
        body = nn.Sequential(conv_bn(cin, cout, kernel, stride, act),
                             conv_bn(cout, cout, kernel, 1, None))
        return Residual(body, shortcut, act)
    if kind == "bottleneck":
        mid = max(cout // 4, 8)
        body = nn.Sequential(conv_bn(cin, mid, 1, 1, act), conv_bn(mid, mid, kernel, stride, act),
                             conv_bn(mid, cout, 1, 1, None))
        return Residual(body, shortcut, act)
    if kind == "mbconv":
        mid = cin * expand
        layers = [conv_bn(cin, mid, 1, 1, act)] if expand > 1 else []
        layers += [conv_bn(mid, mid, kernel, stride, act, groups=mid),
                   conv_bn(mid, cout, 1, 1, None)]
        body = nn.Sequential(*layers)
        # MobileNet v2 adds the input back only where shapes agree (no projection).
        return Residual(body, None, None) if shortcut is None else body
    raise ValueError(f"unknown block {kind!r}")


class Cnn(nn.Module):
    """Stem conv, optional max pool, the blocks, global pooling and a classifier."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        super().__init__()
        act = params["act"]
        width = params["stem"]
        layers: list[nn.Module] = [conv_bn(3, width, params["stem_kernel"], 2, act)]
        if params["maxpool"]:
            layers.append(nn.MaxPool2d(3, 2, 1))
        for kind, kernel, stride, cout, expand in params["blocks"]:
            layers.append(block(kind, width, cout, kernel, stride, expand, act))
            width = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1) if params["pool"] == "avg" else nn.AdaptiveMaxPool2d(1)
        self.classifier = nn.Linear(width, params["classes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def sample(rng: random.Random) -> dict[str, Any]:
    """Random CNN parameters: a mobile (depthwise) or a server (dense conv) style network."""
    mobile = rng.random() < 0.5
    kinds = ("dw", "mbconv", "mbconv") if mobile else ("conv", "res", "bottleneck")
    stages = rng.randint(2, 5)
    width = rng.choice((8, 16, 24, 32))
    blocks: list[list[Any]] = []
    for _ in range(stages):
        width = min(int(width * rng.choice((1.5, 2.0))) // 8 * 8, 320)
        kind, kernel = rng.choice(kinds), rng.choice(KERNELS[1:] if mobile else KERNELS[:3])
        expand = rng.choice((1, 3, 4, 6)) if kind == "mbconv" else 1
        for index in range(rng.randint(1, 3)):
            blocks.append([kind, kernel, 2 if index == 0 else 1, width, expand])
    return {"resolution": rng.choice((32, 64, 96, 128, 160, 224)),
            "stem": rng.choice((8, 16, 24, 32)), "stem_kernel": rng.choice((3, 3, 5, 7)),
            "maxpool": rng.random() < 0.3, "blocks": blocks, "pool": rng.choice(("avg", "avg",
                                                                                 "max")),
            "act": rng.choice(ACTIVATIONS), "classes": rng.choice((10, 100, 1000))}


def module(params: Mapping[str, Any]) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    size = params["resolution"]
    return Cnn(params), (torch.randn(1, 3, size, size),)


def macs(params: Mapping[str, Any]) -> float:
    """Multiply-accumulates, counted from the layer shapes (for sizing, not for features)."""
    size = _out(params["resolution"], 2)
    width, total = params["stem"], 3 * params["stem"] * params["stem_kernel"] ** 2 * size ** 2
    if params["maxpool"]:
        size = _out(size, 2)
    for kind, kernel, stride, cout, expand in params["blocks"]:
        out = _out(size, stride)
        total += _block_macs(kind, width, cout, kernel, size, out, expand)
        width, size = cout, out
    return float(total + width * params["classes"])


def _out(size: int, stride: int) -> int:
    return (size + stride - 1) // stride


def _block_macs(kind: str, cin: int, cout: int, k: int, size: int, out: int,
                expand: int) -> float:
    area, k2 = out * out, k * k
    proj = cin * cout * area if (cin != cout or out != size) else 0
    if kind == "conv":
        return cin * cout * k2 * area
    if kind == "dw":
        return cin * k2 * area + cin * cout * area
    if kind == "res":
        return cin * cout * k2 * area + cout * cout * k2 * area + proj
    if kind == "bottleneck":
        mid = max(cout // 4, 8)
        return cin * mid * size * size + mid * mid * k2 * area + mid * cout * area + proj
    mid = cin * expand
    return cin * mid * size * size * (expand > 1) + mid * k2 * area + mid * cout * area


class Wide(nn.Module):
    """AlexNet / ZFNet / VGG-style: a strided stem, stages of plain convolutions each ended
    by a max pool, a fixed-size pooled map flattened into large fully connected layers."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        super().__init__()
        width, kernel, stride = params["stem"]
        layers: list[nn.Module] = [nn.Conv2d(3, width, kernel, stride, kernel // 2), nn.ReLU(),
                                   nn.MaxPool2d(3, 2, 1)]
        for cout, convs in params["stages"]:
            for _ in range(convs):
                layers += [nn.Conv2d(width, cout, params["kernel"], 1, params["kernel"] // 2),
                           nn.ReLU()]
                width = cout
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(params["pool_to"])
        head: list[nn.Module] = []
        features = width * params["pool_to"] ** 2
        for out in params["fc"]:
            head += [nn.Linear(features, out), nn.ReLU()]
            features = out
        head.append(nn.Linear(features, params["classes"]))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def sample_wide(rng: random.Random) -> dict[str, Any]:
    """Random wide-network parameters: 2-4 stages of 64-512 channels, 1-2 FC layers of
    1024-4096 (their weights, up to ~300 MB, stream from memory at batch 1)."""
    resolution = rng.choice((96, 128, 160, 192, 224))
    stem = rng.choice(([64, 11, 4], [96, 11, 4], [64, 7, 2], [96, 7, 2], [32, 3, 1]))
    size = _out(_out(resolution, stem[2]), 2)
    stages = []
    width = rng.choice((64, 96, 128))
    for _ in range(rng.randint(2, 4)):
        if size < 4:  # every stage halves the map: keep at least 2 x 2 after it
            break
        stages.append([min(width, 512), rng.randint(1, 3)])
        width, size = width * 2, size // 2
    return {"resolution": resolution, "stem": stem, "stages": stages,
            "kernel": rng.choice((3, 3, 5)),
            # ONNX exports an adaptive pool only to a divisor of the map's size.
            "pool_to": rng.choice([p for p in range(3, 8) if size % p == 0] or [1, 2][:size]),
            "fc": [rng.choice((1024, 2048, 4096, 4096)) for _ in range(rng.randint(1, 2))],
            "classes": 1000}


def wide_module(params: Mapping[str, Any]) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    size = params["resolution"]
    return Wide(params), (torch.randn(1, 3, size, size),)


def wide_macs(params: Mapping[str, Any]) -> float:
    """Multiply-accumulates of ``Wide`` (convolutions, then the fully connected layers)."""
    width, kernel, stride = params["stem"]
    size = _out(params["resolution"], stride)
    total = 3 * width * kernel * kernel * size * size
    size = _out(size, 2)
    for cout, convs in params["stages"]:
        for _ in range(convs):
            total += width * cout * params["kernel"] ** 2 * size * size
            width = cout
        size //= 2
    features = width * params["pool_to"] ** 2
    for out in [*params["fc"], params["classes"]]:
        total += features * out
        features = out
    return float(total)
