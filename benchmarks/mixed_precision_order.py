"""Augmented (Hessian + inter-layer dependencies) vs plain Hessian layer order, on real models.

For one precision, both orders are computed on calibration data; then the first ``k``
layers of each order are lowered for several ``k`` and the emitted graph is measured on
held-out data. At equal numbers of low-bit layers, lower drop / loss is better.

    python benchmarks/mixed_precision_order.py digits             # bundled digits CNN
    python benchmarks/mixed_precision_order.py efficientnet       # EfficientNet-Lite0
    python benchmarks/mixed_precision_order.py efficientnet --quick --json out.json

digits: calibration = the first 256 training digits (with labels: accuracy, CE loss),
held out = the bundled test split (450). efficientnet: no labels offline, so fidelity to
the fp32 model (top-1 agreement, KL) on crops of real photos: scikit-learn's two sample
photos and, when present, the photos of Debian's ``darknet`` package (``--photos DIR``,
e.g. ``apt-get download darknet && dpkg -x darknet_*.deb d`` -> ``d/usr/share/darknet/data``).
Calibration uses crops of every other photo, held-out crops of the rest.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CROPS = ((1.0, 0.5, 0.5), (0.8, 0.5, 0.5), (0.7, 0.2, 0.2), (0.7, 0.8, 0.8), (0.7, 0.2, 0.8),
         (0.7, 0.8, 0.2))  # (side as a fraction of the short edge, vertical, horizontal)


def digits_case(calib_samples: int) -> tuple[Any, Any, Any]:
    import optc
    from optc.passes.fold_batchnorm import FoldBatchNorm
    from optc.pipeline import PassContext
    from optc.quant import Calibration

    sys.path.insert(0, str(ROOT / "examples"))
    from train_digits_cnn import load_split

    x_train, x_test, y_train, y_test = load_split()
    graph = FoldBatchNorm().run(optc.load_onnx(ROOT / "examples/models/digits_cnn.onnx"),
                                PassContext())
    return (graph, Calibration({"input": x_train[:calib_samples]}, y_train[:calib_samples]),
            Calibration({"input": x_test}, y_test))


def photos(folder: Path | None) -> list[np.ndarray]:
    """RGB uint8 photos: scikit-learn's samples, plus every ``*.jpg`` in ``folder``."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    found = [np.asarray(image) for image in load_sample_images().images]
    if folder is not None:
        found += [np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.jpg"))]
    return found


def crops(image: np.ndarray, size: int, count: int) -> np.ndarray:
    """Square crops resized to ``size`` and preprocessed ``(x - 127) / 128``."""
    import torch

    height, width, _ = image.shape
    out = []
    for fraction, fy, fx in CROPS[:count]:
        side = int(min(height, width) * fraction)
        y, x = int((height - side) * fy), int((width - side) * fx)
        pixels = torch.from_numpy(np.ascontiguousarray(image[y:y + side, x:x + side]))
        batch = pixels.permute(2, 0, 1)[None].float()
        resized = torch.nn.functional.interpolate(batch, size=(size, size), mode="bilinear",
                                                  antialias=True, align_corners=False)
        out.append(((resized - 127.0) / 128.0).numpy().astype(np.float32))
    return np.concatenate(out)


def efficientnet_case(size: int, folder: Path | None, per_photo: int) -> tuple[Any, Any, Any]:
    import tempfile

    import torch

    import optc
    from optc.pipeline import PassContext, Pipeline
    from optc.quant import Calibration

    sys.path.insert(0, str(ROOT / "tests"))
    import model_zoo

    module = model_zoo.efficientnet_module()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "efficientnet_lite0.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (torch.zeros(1, 3, size, size),), str(path),
                              input_names=["image"], output_names=["output"],
                              opset_version=17, dynamo=False)
        graph = optc.load_onnx(path)
    graph = Pipeline.parse("fold-constants,fold-batchnorm,eliminate-dead-code").run(
        graph, PassContext()).graph
    images = photos(folder)
    calib = np.concatenate([crops(im, size, per_photo) for im in images[0::2]])
    held = np.concatenate([crops(im, size, per_photo) for im in images[1::2]])
    return graph, Calibration({"image": calib}), Calibration({"image": held})


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["digits", "efficientnet"])
    parser.add_argument("--quick", action="store_true",
                        help="fewer samples, lower resolution: the test suite's setting")
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--act-bits", type=int, default=16)
    parser.add_argument("--size", type=int, default=None, help="EfficientNet input size")
    parser.add_argument("--hutchinson-samples", type=int, default=None)
    parser.add_argument("--photos", type=Path, default=Path("/usr/share/darknet/data"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from optc.quant import precision_for
    from optc.quant.compare import compare_orders

    started = time.perf_counter()
    if args.model == "digits":
        graph, calibration, held_out = digits_case(128 if args.quick else 256)
        samples = args.hutchinson_samples or (8 if args.quick else 32)
    else:
        size = args.size or (96 if args.quick else 160)
        folder = args.photos if args.photos.is_dir() else None
        graph, calibration, held_out = efficientnet_case(size, folder, 3 if args.quick else 6)
        samples = args.hutchinson_samples or (2 if args.quick else 4)
    n = len([1 for node in graph.nodes if node.op in ("Conv", "Gemm", "MatMul")])
    counts = sorted({max(1, n * j // 6) for j in range(1, 6)})
    comparison = compare_orders(graph, calibration, held_out,
                                precision_for(args.bits, args.act_bits), counts,
                                hutchinson_samples=samples)
    result = {"model": args.model, "quick": args.quick, "calibration": calibration.size,
              "held_out": held_out.size, "hutchinson_samples": samples,
              "seconds": round(time.perf_counter() - started, 1), **comparison.summary()}
    print(json.dumps(result, indent=1))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
