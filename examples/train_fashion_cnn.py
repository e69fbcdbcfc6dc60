"""Train the bundled Fashion-MNIST CNN and export it to ONNX (examples/models/fashion_cnn.onnx).

Real data: Fashion-MNIST (Zalando; 60,000 training and 10,000 test images of 28x28
clothing, 10 classes) from Debian's ``dataset-fashion-mnist`` package
(``apt-get install dataset-fashion-mnist``; idx files in /usr/share/datasets/fashion-mnist).
Three conv blocks with BatchNorm (32, 64, 128 channels at 28, 14 and 7 pixels, ~7.4 M
multiply-adds per image) reach 86 % test accuracy in three epochs (the bundled model:
86.35 %; ~11 CPU-minutes). Unlike the digits CNN (8x8 inputs, ~25 us per image, bound by kernel
launches) its time is in the convolutions, so lower precision can show in its latency.

The first ``--keep`` test images are saved beside the model (fashion_test.npz:
``input`` float32 [N,1,28,28] in [0,1] and ``labels`` int64 [N]) so examples,
benchmarks and tests can measure task accuracy.

    python examples/train_fashion_cnn.py [--data DIR] [--out examples/models]
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import numpy as np
import torch
from cnn_training import conv_bn_relu, export_classifier, train_classifier
from torch import nn

SEED = 0
DEBIAN_DATA = Path("/usr/share/datasets/fashion-mnist")


def build_model() -> nn.Module:
    block = conv_bn_relu
    return nn.Sequential(
        *block(1, 32), nn.MaxPool2d(2),
        *block(32, 64), nn.MaxPool2d(2),
        *block(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10),
    )


def read_idx(path: Path) -> np.ndarray:
    """An idx file (the MNIST format): big-endian dims after a magic number."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(int)
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(data: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(data / f"{split}-images-idx3-ubyte.gz")
    labels = read_idx(data / f"{split}-labels-idx1-ubyte.gz")
    return (images.astype(np.float32) / 255.0)[:, None], labels.astype(np.int64)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEBIAN_DATA)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "models")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--keep", type=int, default=1000, help="test images saved beside it")
    args = parser.parse_args()
    if not (args.data / "train-images-idx3-ubyte.gz").is_file():
        print(f"error: no Fashion-MNIST in {args.data} "
              "(apt-get install dataset-fashion-mnist)", file=sys.stderr)
        return 2
    torch.manual_seed(SEED)
    x_train, y_train = load(args.data, "train")
    x_test, y_test = load(args.data, "t10k")
    model = build_model()
    train_classifier(model, x_train, y_train, epochs=args.epochs, lr=2e-3, batch=128, seed=SEED)
    with torch.no_grad():
        accuracy = float(np.mean([
            (model(torch.from_numpy(x_test[i:i + 1000])).argmax(1).numpy()
             == y_test[i:i + 1000]).mean() for i in range(0, len(x_test), 1000)
        ]))
    args.out.mkdir(parents=True, exist_ok=True)
    export_classifier(model, x_test[:1], args.out / "fashion_cnn.onnx")
    np.savez_compressed(args.out / "fashion_test.npz", input=x_test[:args.keep],
                        labels=y_test[:args.keep])
    print(f"test accuracy {accuracy:.4f} on {len(y_test)} test images -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
