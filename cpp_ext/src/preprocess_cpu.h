// Multithreaded CPU kernel: warp + BGR->RGB + normalise + NCHW in one pass.
#pragma once

#include <cstdint>
#include <vector>

#include "warp_math.h"

namespace maskfr {

// Writes jobs.size() x 3 x size x size values into `out` (C-contiguous). num_threads <= 0: auto.
void preprocess_cpu_f32(const std::vector<FaceJob>& jobs, int size, float* out, int num_threads);
// Same, writing IEEE binary16 bit patterns.
void preprocess_cpu_f16(const std::vector<FaceJob>& jobs, int size, std::uint16_t* out, int num_threads);
// Which row kernel the dispatcher picked on this CPU: "avx2+fma" or "baseline".
const char* cpu_kernel_name();

}  // namespace maskfr
