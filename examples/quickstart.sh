#!/usr/bin/env bash
# Newcomer's first run: set up optc from scratch, then optimize the bundled digits CNN
# (a real model trained on scikit-learn's handwritten digits, examples/models/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup
. .venv/bin/activate
mkdir -p out
optc show examples/models/digits_cnn.onnx
optc run-passes examples/models/digits_cnn.onnx \
    --passes "fold-constants,fold-batchnorm,eliminate-dead-code" --verify \
    -o out/digits_cnn.opt.onnx
optc show out/digits_cnn.opt.onnx
