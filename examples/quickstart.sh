#!/usr/bin/env bash
# Newcomer's first run: set up optc from scratch, then optimize and compile the bundled
# digits CNN (a real model trained on scikit-learn's handwritten digits, examples/models/)
# for this machine's CPU: passes, roofline prediction, TVM build, output check, timing.
# Then compiles it again to a latency budget (search over quantized/fused variants).
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup
. .venv/bin/activate
mkdir -p out
optc show examples/models/digits_cnn.onnx
optc run-passes examples/models/digits_cnn.onnx \
    --passes "fold-constants,fold-batchnorm,eliminate-dead-code" --verify \
    -o out/digits_cnn.opt.onnx
optc compile examples/models/digits_cnn.onnx --target host -o out/digits_cnn
optc measure out/digits_cnn
# The whole promise: the most accurate variant that meets a 5 ms budget, measured here.
optc compile examples/models/digits_cnn.onnx --target host --budget 5ms --max-drop 0.01 \
    --calib examples/models/digits_test.npz -o out/digits_cnn_budget
