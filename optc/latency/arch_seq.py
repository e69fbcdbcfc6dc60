"""Transformer encoders and MLPs for the latency dataset: sampled parameters -> torch module.

The encoder layer is written out (Q/K/V projections, reshape to heads, scaled dot
product, softmax, output projection, FFN), pre- or post-norm, so the exported graph
has the MatMul / Softmax / LayerNormalization pattern of BERT-style models rather
than one fused operator.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from optc.latency.arch_cnn import activation


class EncoderLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, ffn: int, act: str, pre_norm: bool) -> None:
        super().__init__()
        self.heads, self.pre_norm = heads, pre_norm
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, ffn), activation(act), nn.Linear(ffn, hidden))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, hidden = x.shape
        q, k, v = self.qkv(x).reshape(batch, seq, 3, self.heads, hidden // self.heads).permute(
            2, 0, 3, 1, 4)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(hidden // self.heads)
        mixed = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.out(mixed.transpose(1, 2).reshape(batch, seq, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.attention(self.norm1(x))
            return x + self.ffn(self.norm2(x))
        x = self.norm1(x + self.attention(x))
        return self.norm2(x + self.ffn(x))


class Encoder(nn.Module):
    """Token embedding (or float features), ``layers`` encoder layers, a pooled head."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        super().__init__()
        hidden = params["hidden"]
        self.embed = nn.Embedding(params["vocab"], hidden) if params["vocab"] else None
        self.position = nn.Parameter(torch.randn(1, params["seq"], hidden) * 0.02)
        self.layers = nn.Sequential(*(
            EncoderLayer(hidden, params["heads"], hidden * params["ffn"], params["act"],
                         params["pre_norm"]) for _ in range(params["layers"])))
        self.head = nn.Linear(hidden, params["classes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            x = self.embed(x)
        hidden = self.layers(x + self.position)
        return self.head(hidden.mean(dim=1))


class Mlp(nn.Module):
    def __init__(self, params: Mapping[str, Any]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = params["features"]
        for out in params["hidden"]:
            layers += [nn.Linear(width, out), activation(params["act"])]
            if params["norm"]:
                layers.append(nn.LayerNorm(out))
            width = out
        layers.append(nn.Linear(width, params["classes"]))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def sample_transformer(rng: random.Random) -> dict[str, Any]:
    heads = rng.choice((2, 4, 6, 8, 12))
    head_dim = rng.choice((16, 32, 64))
    return {"seq": rng.choice((16, 32, 64, 128, 256)), "hidden": heads * head_dim,
            "heads": heads, "layers": rng.randint(1, 6), "ffn": rng.choice((2, 4)),
            "act": rng.choice(("gelu", "relu")), "pre_norm": rng.random() < 0.5,
            "vocab": rng.choice((0, 1000, 8000)), "classes": rng.choice((2, 10, 100))}


def sample_mlp(rng: random.Random) -> dict[str, Any]:
    widths = (64, 128, 256, 512, 1024, 2048)
    return {"batch": rng.choice((1, 8, 32, 64, 128)), "features": rng.choice(widths),
            "hidden": [rng.choice(widths) for _ in range(rng.randint(1, 6))],
            "act": rng.choice(("relu", "gelu", "silu")), "norm": rng.random() < 0.3,
            "classes": rng.choice((10, 100, 1000))}


def transformer_module(params: Mapping[str, Any]) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    if params["vocab"]:
        example = torch.randint(0, params["vocab"], (1, params["seq"]))
    else:
        example = torch.randn(1, params["seq"], params["hidden"])
    return Encoder(params), (example,)


def mlp_module(params: Mapping[str, Any]) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    return Mlp(params), (torch.randn(params["batch"], params["features"]),)


def transformer_macs(params: Mapping[str, Any]) -> float:
    seq, hidden, ffn = params["seq"], params["hidden"], params["ffn"]
    per_layer = seq * hidden * hidden * (4 + 2 * ffn) + 2 * seq * seq * hidden
    return float(params["layers"] * per_layer + hidden * params["classes"])


def mlp_macs(params: Mapping[str, Any]) -> float:
    widths = [params["features"], *params["hidden"], params["classes"]]
    return float(params["batch"] * sum(a * b for a, b in itertools.pairwise(widths)))
