#!/usr/bin/env bash
# Installs the latency suite's peers next to ovgenai-chat:
#   - llama-cpp-python, matplotlib and jsonschema into the active environment (the `bench` extra);
#   - optimum-intel, the notebook's path, into its own interpreter at benchmarks/.venv-optimum, since it
#     pins transformers and needs torch. torch is pinned on the same line: unpinned, it pulls GBs of CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON}" pip install -e ".[bench]"
python3.11 -m venv benchmarks/.venv-optimum
benchmarks/.venv-optimum/bin/pip install "optimum-intel[openvino]==2.2.0" torch==2.13.0
# torchvision comes along with some optimum releases and does not match the pinned torch
benchmarks/.venv-optimum/bin/pip uninstall -y torchvision 2>/dev/null || true
echo "peers installed: run python benchmarks/bench.py"
