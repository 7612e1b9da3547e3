// CUDA kernel entry points. Plain C++ interface so the .cu file never sees pybind11.
#pragma once

#include <cstdint>
#include <vector>

#include "warp_math.h"

namespace maskfr::cuda {

// True when the CUDA runtime sees at least one device; any runtime error counts as "no device".
bool available();

// Host frames: each is copied once into pinned memory, then to the device on `stream`.
// jobs[i].frame is an index into `frames` cast to a pointer-sized integer, rewritten here.
struct HostFrame {
    const std::uint8_t* data;
    std::int64_t bytes;
};

// Crops jobs.size() faces into the device buffer `out` (N,3,size,size; float32, or float16 if
// `half`) on `stream`. Frames live on the host (frames non-empty, jobs[i].frame holds the frame
// index) or on the device (frames empty, jobs[i].frame is the device pointer). Returns once the
// work is queued; throws std::runtime_error with the CUDA error string on failure.
void preprocess(const std::vector<HostFrame>& frames, std::vector<FaceJob> jobs, int size, bool half,
                std::uintptr_t out, std::uintptr_t stream);

}  // namespace maskfr::cuda
