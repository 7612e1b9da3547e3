#include "preprocess_cuda.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace maskfr::cuda {
namespace {

void check(cudaError_t err, const char* what) {
    if (err != cudaSuccess) {
        // The runtime also keeps a failed call's error as its "last error": clear it, or the next
        // call's cudaGetLastError() after a good launch would report this one again.
        cudaGetLastError();
        throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorName(err) + ": " +
                                 cudaGetErrorString(err));
    }
}
#define MFR_CUDA_CHECK(expr) check((expr), #expr)

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }

// One thread per crop pixel; blockIdx.y is the face (offset by face0 for batches > 65535).
template <typename T>
__global__ void warp_kernel(const FaceJob* jobs, int face0, int size, int vec_end, T* out) {
    const int pixel = blockIdx.x * blockDim.x + threadIdx.x;
    const int plane = size * size;
    if (pixel >= plane) return;
    const int n = face0 + static_cast<int>(blockIdx.y);
    std::uint8_t rgb[3];
    warp_pixel(jobs[n], pixel % size, pixel / size, vec_end, rgb);
    T* dst = out + static_cast<std::int64_t>(n) * 3 * plane + pixel;
    store(dst, normalise(rgb[0]));
    store(dst + plane, normalise(rgb[1]));
    store(dst + 2 * plane, normalise(rgb[2]));
}

// Pinned + device staging reused across calls. `done` marks the end of the last kernel that read
// the device copy, so the next call waits on it before overwriting either buffer.
struct Staging {
    std::mutex mutex;
    void* host = nullptr;
    void* device = nullptr;
    std::size_t capacity = 0;
    cudaEvent_t done = nullptr;

    void reserve(std::size_t bytes) {
        if (!done) MFR_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
        MFR_CUDA_CHECK(cudaEventSynchronize(done));
        if (bytes <= capacity) return;
        const std::size_t grown = std::max(bytes, capacity * 2);
        if (host) MFR_CUDA_CHECK(cudaFreeHost(host));
        if (device) MFR_CUDA_CHECK(cudaFree(device));
        host = device = nullptr;
        capacity = 0;
        MFR_CUDA_CHECK(cudaHostAlloc(&host, grown, cudaHostAllocDefault));
        MFR_CUDA_CHECK(cudaMalloc(&device, grown));
        capacity = grown;
    }
};

// One per device: the buffers belong to the device that was current when they were allocated, and a
// caller may switch devices (one process feeding several GPUs) between calls.
Staging& staging() {
    int device = 0;
    MFR_CUDA_CHECK(cudaGetDevice(&device));
    static std::mutex mutex;
    static auto* all = new std::map<int, Staging>();  // never destroyed: freeing CUDA memory at exit is unsafe
    std::lock_guard<std::mutex> lock(mutex);
    return (*all)[device];  // map nodes never move: the reference stays valid
}

// The kernels of one batch, in grid-y slices of at most 65535 faces.
void launch(const FaceJob* d_jobs, std::size_t n_jobs, int size, bool half, std::uintptr_t out, cudaStream_t stream) {
    const int threads = 256;
    const int plane = size * size;
    const int vec_end = size - size % kOpenCvLanes;
    constexpr int kMaxGridY = 65535;
    for (int face0 = 0; face0 < static_cast<int>(n_jobs); face0 += kMaxGridY) {
        const dim3 grid((plane + threads - 1) / threads, std::min<int>(kMaxGridY, static_cast<int>(n_jobs) - face0));
        if (half) {
            warp_kernel<__half><<<grid, threads, 0, stream>>>(d_jobs, face0, size, vec_end, reinterpret_cast<__half*>(out));
        } else {
            warp_kernel<float><<<grid, threads, 0, stream>>>(d_jobs, face0, size, vec_end, reinterpret_cast<float*>(out));
        }
        MFR_CUDA_CHECK(cudaGetLastError());
    }
}

constexpr std::size_t align_up(std::size_t v) { return (v + 255) & ~static_cast<std::size_t>(255); }

cudaPointerAttributes attributes(std::uintptr_t ptr) {
    cudaPointerAttributes a{};
    MFR_CUDA_CHECK(cudaPointerGetAttributes(&a, reinterpret_cast<const void*>(ptr)));
    return a;
}

// Makes `stream` wait for the work queued so far on each producer stream (on the current device).
void wait_for(const std::vector<std::uintptr_t>& producers, cudaStream_t stream) {
    for (std::uintptr_t p : producers) {
        const auto producer = reinterpret_cast<cudaStream_t>(p);
        if (producer == stream) continue;
        cudaEvent_t event = nullptr;
        MFR_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
        cudaError_t err = cudaEventRecord(event, producer);
        if (err == cudaSuccess) err = cudaStreamWaitEvent(stream, event, 0);
        cudaEventDestroy(event);  // safe while the wait is pending: freed once the event completes
        check(err, "cudaEventRecord + cudaStreamWaitEvent on a CUDA Array Interface stream");
    }
}

}  // namespace

DeviceScope::DeviceScope(std::uintptr_t out) {
    MFR_CUDA_CHECK(cudaGetDevice(&previous_));
    const cudaPointerAttributes a = attributes(out);
    device_ = a.type == cudaMemoryTypeDevice ? a.device : previous_;
    if (device_ != previous_) MFR_CUDA_CHECK(cudaSetDevice(device_));
    try {
        check_usable(out, "out");
    } catch (...) {
        if (device_ != previous_) cudaSetDevice(previous_);
        throw;
    }
}

DeviceScope::~DeviceScope() {
    if (device_ != previous_) cudaSetDevice(previous_);
}

// A kernel touching memory its GPU cannot reach faults, and a fault ends the CUDA context of the
// whole process (CuPy, PyTorch and TensorRT with it), so such pointers are refused up front.
// devicePointer is the address the current device reaches the memory by (null: not at all).
void DeviceScope::check_usable(std::uintptr_t ptr, const std::string& what) const {
    const cudaPointerAttributes a = attributes(ptr);
    if (a.type == cudaMemoryTypeDevice && a.device != device_) {
        throw std::invalid_argument(what + " is on GPU " + std::to_string(a.device) + ", the batch runs on GPU " +
                                    std::to_string(device_));
    }
    if (reinterpret_cast<std::uintptr_t>(a.devicePointer) != ptr) {
        throw std::invalid_argument(what + " is not memory GPU " + std::to_string(device_) +
                                    " can access (pageable host memory, or not a CUDA allocation)");
    }
}

bool available() {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        cudaGetLastError();  // reset the runtime's last-error state so later calls start clean
        return false;
    }
    return count > 0;
}

void preprocess(const std::vector<HostFrame>& frames, std::vector<FaceJob> jobs, int size, bool half,
                std::uintptr_t out, std::uintptr_t stream_handle, const std::vector<std::uintptr_t>& producers) {
    if (jobs.empty()) return;
    auto stream = reinterpret_cast<cudaStream_t>(stream_handle);
    const std::size_t jobs_bytes = align_up(jobs.size() * sizeof(FaceJob));
    std::vector<std::size_t> offsets(frames.size());
    std::size_t total = jobs_bytes;
    for (std::size_t i = 0; i < frames.size(); ++i) {
        offsets[i] = total;
        total = align_up(total + static_cast<std::size_t>(frames[i].bytes));
    }

    Staging& s = staging();
    std::lock_guard<std::mutex> lock(s.mutex);
    s.reserve(total);
    auto* host = static_cast<std::uint8_t*>(s.host);
    auto* device = static_cast<std::uint8_t*>(s.device);
    if (!frames.empty()) {
        for (FaceJob& job : jobs) job.frame = device + offsets[reinterpret_cast<std::uintptr_t>(job.frame)];
        for (std::size_t i = 0; i < frames.size(); ++i) {
            std::memcpy(host + offsets[i], frames[i].data, static_cast<std::size_t>(frames[i].bytes));
        }
    }
    std::memcpy(host, jobs.data(), jobs.size() * sizeof(FaceJob));
    wait_for(producers, stream);
    MFR_CUDA_CHECK(cudaMemcpyAsync(device, host, total, cudaMemcpyHostToDevice, stream));
    try {
        launch(reinterpret_cast<const FaceJob*>(device), jobs.size(), size, half, out, stream);
    } catch (...) {
        // the copy is queued: the next call must still wait for it before rewriting the pinned buffer. A failure
        // here is left out of the runtime's last error, which the next call's launch check would report
        if (cudaEventRecord(s.done, stream) != cudaSuccess) cudaGetLastError();
        throw;
    }
    MFR_CUDA_CHECK(cudaEventRecord(s.done, stream));
}

}  // namespace maskfr::cuda
