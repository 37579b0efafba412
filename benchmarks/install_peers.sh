#!/usr/bin/env bash
# Installs the latency suite's peers next to ovgenai-chat:
#   - llama-cpp-python, matplotlib and jsonschema into the active environment (the `bench` extra). llama.cpp
#     is built portably: a native build (-march=native) on an Intel Xeon with AMX includes its AMX kernel,
#     which dies with SIGILL (tileloadd) in VMs that do not grant AMX tiles to the process. So on x86 the
#     build turns on the AVX/AVX2/FMA/F16C/AVX512 features this CPU lists and leaves AMX off; elsewhere it
#     builds natively. Set CMAKE_ARGS to build otherwise. ~6 minutes on 2 cores.
#   - optimum-intel, the notebook's path, into its own interpreter at benchmarks/.venv-optimum, since it
#     pins transformers and needs torch. torch is pinned on the same line: unpinned, it pulls GBs of CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
cpu_flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
has() { [[ "$cpu_flags" == *" $1 "* ]] && echo ON || echo OFF; }
if [[ "$cpu_flags" == *" avx2 "* ]]; then
  LLAMA_CPU="-DGGML_NATIVE=OFF -DGGML_AVX=$(has avx) -DGGML_AVX2=ON -DGGML_FMA=$(has fma) -DGGML_F16C=$(has f16c) \
-DGGML_AVX512=$(has avx512f) -DGGML_AVX512_VBMI=$(has avx512vbmi) -DGGML_AVX512_VNNI=$(has avx512_vnni) \
-DGGML_AVX512_BF16=$(has avx512_bf16) -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
else
  LLAMA_CPU="-DGGML_NATIVE=ON"
fi
echo "building llama.cpp with CMAKE_ARGS=${CMAKE_ARGS:-$LLAMA_CPU}"
CMAKE_ARGS="${CMAKE_ARGS:-$LLAMA_CPU}" pip install --no-cache-dir -e ".[bench]"
python3.11 -m venv benchmarks/.venv-optimum
benchmarks/.venv-optimum/bin/pip install "optimum-intel[openvino]==2.2.0" torch==2.13.0
# torchvision comes along with some optimum releases and does not match the pinned torch
benchmarks/.venv-optimum/bin/pip uninstall -y torchvision 2>/dev/null || true
echo "peers installed: run python benchmarks/bench.py"
