#!/usr/bin/env bash
# Every check of the CUDA preprocessing kernel that needs a GPU, in one call (one lease of a GPU machine):
#   build maskfr with the CUDA kernel for this GPU, the GPU tests, compute-sanitizer (memcheck, racecheck),
#   and benchmarks/preprocess.py's kernel-vs-bandwidth table. Needs nvcc, CMake, pybind11,
#   scikit-build-core, CuPy or PyTorch; no network. Logs go to $OUT (default /tmp/maskfr_gpu).
#
#   bash benchmarks/gpu_session.sh              # ~3-5 min on an H100/H200, most of it the build
#   CUDA_ARCH=87 bash benchmarks/gpu_session.sh # e.g. on a Jetson Orin
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/maskfr_gpu}
PY=${PY:-python3}
SITE=${SITE:-/tmp/maskfr_site}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_session.log") 2>&1
status=0
step() { echo; echo "=== $* ($(date +%T))"; }

step GPU
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv || status=1
ARCH=${CUDA_ARCH:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)}
nvcc --version | tail -2
[ -n "$ARCH" ] || { echo "no GPU visible to nvidia-smi: set CUDA_ARCH to build anyway"; exit 2; }

step "build maskfr with CUDA kernel for sm_$ARCH"
rm -rf "$SITE"
"$PY" -m pip install -q --no-index --no-deps --no-build-isolation --target "$SITE" \
  -C "cmake.define.CMAKE_CUDA_ARCHITECTURES=$ARCH" -C "cmake.define.pybind11_DIR=$("$PY" -m pybind11 --cmakedir)" \
  -C build-dir=/tmp/maskfr_build . || { echo "BUILD FAILED"; exit 2; }
export PYTHONPATH="$SITE"
"$PY" -c "from maskfr import _ext as e; print('has_cuda', e.has_cuda, 'cuda_available', e.cuda_available())
assert e.cuda_available(), 'the CUDA kernel cannot run here: every GPU test would only skip'" || exit 2

step "GPU tests (against the OpenCV + numpy reference)"
"$PY" -m pytest -q -p no:cacheprovider tests/test_ext.py -m gpu -rs || status=1
step "the other extension tests (CPU kernel on this machine's CPU)"
"$PY" -m pytest -q -p no:cacheprovider tests/test_ext.py -m "not gpu" -rs || status=1

for tool in memcheck racecheck; do
  step "compute-sanitizer --tool $tool"
  compute-sanitizer --tool "$tool" --error-exitcode 3 \
    "$PY" -m pytest -q -p no:cacheprovider tests/test_ext.py -m gpu -x || status=1
done

step "benchmarks/preprocess.py"
"$PY" benchmarks/preprocess.py --budget 0.5 | tee "$OUT/preprocess.md" || status=1

step "done: status $status"
exit $status
