// CUDA kernel entry points. Plain C++ interface so the .cu file never sees pybind11.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "warp_math.h"

namespace maskfr::cuda {

// True when the CUDA runtime sees at least one device; any runtime error counts as "no device".
bool available();

// Makes the device of `out` (device memory; else the current device) current until destroyed, so
// the staging buffers, events and kernel are on the GPU that holds the buffers even when the caller
// feeds several GPUs from one thread. Throws std::invalid_argument (ValueError) when `out` is
// memory that GPU cannot access.
class DeviceScope {
public:
    explicit DeviceScope(std::uintptr_t out);
    ~DeviceScope();
    DeviceScope(const DeviceScope&) = delete;
    DeviceScope& operator=(const DeviceScope&) = delete;
    // Throws std::invalid_argument unless the kernel can read `ptr` on this device.
    void check_usable(std::uintptr_t ptr, const std::string& what) const;

private:
    int device_ = 0;
    int previous_ = 0;
};

// Host frames: each is copied once into pinned memory, then to the device on `stream`.
// jobs[i].frame is an index into `frames` cast to a pointer-sized integer, rewritten here.
struct HostFrame {
    const std::uint8_t* data;
    std::int64_t bytes;
};

// Crops jobs.size() faces into the device buffer `out` (N,3,size,size; float32, or float16 if
// `half`) on `stream`. Frames live on the host (frames non-empty, jobs[i].frame holds the frame
// index) or on the device (frames empty, jobs[i].frame is the device pointer). `producers`: the
// streams (CUDA Array Interface v3 `stream`) whose queued work on `out` or the device frames must
// finish before the kernel runs. Call inside a DeviceScope for `out`. Returns once the work is
// queued; throws std::runtime_error with the CUDA error string on failure.
void preprocess(const std::vector<HostFrame>& frames, std::vector<FaceJob> jobs, int size, bool half,
                std::uintptr_t out, std::uintptr_t stream, const std::vector<std::uintptr_t>& producers);

}  // namespace maskfr::cuda
