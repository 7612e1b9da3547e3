#!/usr/bin/env bash
# The CPU preprocessing kernel built for aarch64 (Jetson's CPU, Graviton, Raspberry Pi) and run under qemu, against
# the x86-64 build that tests/test_ext.py checks against OpenCV: same inputs, outputs compared byte for byte.
# Needs a cross compiler and qemu-user (Debian: apt-get install g++-aarch64-linux-gnu qemu-user); with pybind11 in
# python3 it also compiles the bindings.
# Runs on an x86-64 host (the reference build uses AVX2). Usage: benchmarks/aarch64_check.sh [work dir]
set -euo pipefail
src="$(cd "$(dirname "$0")/../cpp_ext" && pwd)"
out="${1:-$(mktemp -d)}"
mkdir -p "$out"
flags=(-std=c++17 -O3 -ffp-contract=off -pthread)  # as cpp_ext/CMakeLists.txt builds them

build() {  # build CXX OUTPUT [extra flags for preprocess_cpu.cpp]: the baseline rows (+ AVX2 rows on x86-64)
    local cxx=$1 exe=$2; shift 2
    local objs=("$out/rows_base.$cxx.o")
    "$cxx" "${flags[@]}" -c "$src/src/cpu_rows.cpp" -DMFR_ROWS_NS=baseline -o "${objs[0]}"
    if [[ "$*" == *MASKFR_HAVE_AVX2_ROWS* ]]; then
        objs+=("$out/rows_avx2.$cxx.o")
        "$cxx" "${flags[@]}" -c "$src/src/cpu_rows.cpp" -DMFR_ROWS_NS=avx2 -mavx2 -mfma -mf16c -o "${objs[1]}"
    fi
    "$cxx" "${flags[@]}" "$@" "$src/check/kernel_dump.cpp" "$src/src/preprocess_cpu.cpp" "${objs[@]}" -static -o "$exe"
}

# the bindings too (compile only: running them would need an aarch64 Python)
if includes=$(python3 -c "import pybind11, sysconfig; print(pybind11.get_include(), sysconfig.get_paths()['include'])" 2>/dev/null); then
    aarch64-linux-gnu-g++ "${flags[@]}" -fsyntax-only $(printf -- '-I%s ' $includes) "$src/src/module.cpp"
    echo "module.cpp (pybind11 bindings) compiles for aarch64"
else
    echo "module.cpp not checked: no pybind11 in python3"
fi
build g++ "$out/dump_x86_64" -DMASKFR_HAVE_AVX2_ROWS=1
build aarch64-linux-gnu-g++ "$out/dump_aarch64"
"$out/dump_x86_64" > "$out/x86_64.bin"
MASKFR_CPU_KERNEL=baseline "$out/dump_x86_64" > "$out/x86_64_baseline.bin"
qemu-aarch64 "$out/dump_aarch64" > "$out/aarch64.bin"
echo "ran the aarch64 build under qemu-aarch64"
python3 - "$out" <<'PY'
import sys
from pathlib import Path

import numpy as np

d = Path(sys.argv[1])
n = 64 * 3 * 112 * 112
def load(name):
    raw = (d / name).read_bytes()
    return np.frombuffer(raw[:4 * n], np.float32), np.frombuffer(raw[4 * n:], np.float16)
ref = load("x86_64.bin")
for name in ("x86_64_baseline.bin", "aarch64.bin"):
    for kind, a, b in zip(("float32", "float16"), ref, load(name)):
        diff = a.view(np.uint32 if kind == "float32" else np.uint16) != b.view(np.uint32 if kind == "float32" else np.uint16)
        print(f"{name[:-4]:>16} vs x86_64 AVX2, {kind}: {int(diff.sum())} of {n} values differ, "
              f"max abs difference {float(np.abs(a.astype(np.float64) - b).max()):.3g}")
PY
