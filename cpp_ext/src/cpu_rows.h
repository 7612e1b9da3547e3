// The row loop of the CPU kernel, compiled once for baseline CPUs and, on x86-64, once more with
// AVX2+FMA (chosen at run time), so wheels stay portable. Deliberately free of STL templates:
// inline STL code compiled with -mavx2 could otherwise be merged into the baseline build.
#pragma once

#include <cstdint>

#include "warp_math.h"

namespace maskfr {

// rows_*: crop rows [begin, end) of the batch, numbered face-major.
namespace baseline {
void rows_f32(const FaceJob* jobs, int size, const float* lut, float* out, std::int64_t begin, std::int64_t end);
void rows_f16(const FaceJob* jobs, int size, const std::uint16_t* lut, std::uint16_t* out, std::int64_t begin,
              std::int64_t end);
}  // namespace baseline
namespace avx2 {  // x86-64 only (MASKFR_HAVE_AVX2_ROWS)
void rows_f32(const FaceJob* jobs, int size, const float* lut, float* out, std::int64_t begin, std::int64_t end);
void rows_f16(const FaceJob* jobs, int size, const std::uint16_t* lut, std::uint16_t* out, std::int64_t begin,
              std::int64_t end);
}  // namespace avx2
}  // namespace maskfr
