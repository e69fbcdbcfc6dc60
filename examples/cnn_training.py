"""What the example CNN trainers share: the conv block, the training loop, the ONNX export.

Imported by ``train_digits_cnn.py`` and ``train_fashion_cnn.py`` (run as scripts, so this
folder is on ``sys.path``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


def conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    """A 3x3 conv without bias, BatchNorm and ReLU: the pattern optc's fold and fusion
    passes rewrite, kept unfolded in the exported model on purpose."""
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def train_classifier(model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int,
                     lr: float, batch: int, seed: int) -> None:
    """Adam on cross-entropy over shuffled mini-batches; leaves ``model`` in eval mode."""
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt))
        for start in range(0, len(xt), batch):
            idx = order[start:start + batch]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            optimizer.step()
    model.eval()


def export_classifier(model: nn.Module, sample: np.ndarray, path: Path) -> None:
    """ONNX opset 17 with input ``input`` and output ``logits``, traced on ``sample``."""
    torch.onnx.export(model, (torch.from_numpy(sample),), str(path),
                      input_names=["input"], output_names=["logits"], opset_version=17,
                      do_constant_folding=False,  # keep BatchNorm: optc folds it itself
                      dynamo=False)
