#include "preprocess_cpu.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <system_error>
#include <thread>

#include "cpu_rows.h"

namespace maskfr {
namespace {

// float -> binary16, round to nearest even. Only used for the 256 normalised values, which are
// all normal halves in [-1, 1], so subnormals, overflow and NaN need no handling.
std::uint16_t half_bits(float f) {
    std::uint32_t x;
    std::memcpy(&x, &f, sizeof x);
    const std::uint32_t sign = (x >> 16) & 0x8000u;
    const int exp = static_cast<int>((x >> 23) & 0xffu) - 127 + 15;
    if (exp <= 0) return static_cast<std::uint16_t>(sign);
    const std::uint32_t mant = x & 0x7fffffu;
    std::uint32_t h = (static_cast<std::uint32_t>(exp) << 10) | (mant >> 13);
    const std::uint32_t rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // a carry correctly bumps the exponent
    return static_cast<std::uint16_t>(sign | h);
}

// MASKFR_CPU_KERNEL=baseline forces the portable kernel (tests cover both on AVX2 machines).
bool has_avx2_fma() {
#if defined(MASKFR_HAVE_AVX2_ROWS)
    static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                            __builtin_cpu_supports("f16c") &&
                            !(std::getenv("MASKFR_CPU_KERNEL") && std::strcmp(std::getenv("MASKFR_CPU_KERNEL"), "baseline") == 0);
    return yes;
#else
    return false;
#endif
}

using RowsF32 = void (*)(const FaceJob*, int, const float*, float*, std::int64_t, std::int64_t);
using RowsF16 = void (*)(const FaceJob*, int, const std::uint16_t*, std::uint16_t*, std::int64_t, std::int64_t);

RowsF32 pick_f32() {
#if defined(MASKFR_HAVE_AVX2_ROWS)
    if (has_avx2_fma()) return avx2::rows_f32;
#endif
    return baseline::rows_f32;
}

RowsF16 pick_f16() {
#if defined(MASKFR_HAVE_AVX2_ROWS)
    if (has_avx2_fma()) return avx2::rows_f16;
#endif
    return baseline::rows_f16;
}

// Splits the batch's crop rows into contiguous chunks, one per thread (the caller runs one).
template <typename T, typename Rows>
void run(const std::vector<FaceJob>& jobs, int size, const T* lut, T* out, int num_threads, Rows rows) {
    const std::int64_t total = static_cast<std::int64_t>(jobs.size()) * size;
    constexpr std::int64_t kMinRowsPerThread = 32;  // below this, starting a thread costs more than it saves
    std::int64_t threads = num_threads > 0 ? num_threads : std::max(1u, std::thread::hardware_concurrency());
    threads = std::max<std::int64_t>(1, std::min(threads, total / kMinRowsPerThread));
    const std::int64_t chunk = (total + threads - 1) / threads;
    std::vector<std::thread> pool;
    pool.reserve(static_cast<std::size_t>(threads));
    std::int64_t b = chunk;
    try {
        for (; b < total; b += chunk) pool.emplace_back(rows, jobs.data(), size, lut, out, b, std::min(total, b + chunk));
    } catch (const std::system_error&) {
        // No thread to be had (thread or memory limits): letting this propagate would destroy
        // joinable threads (std::terminate), so the chunks left run on this thread instead.
    }
    for (; b < total; b += chunk) rows(jobs.data(), size, lut, out, b, std::min(total, b + chunk));
    rows(jobs.data(), size, lut, out, 0, std::min(total, chunk));
    for (auto& t : pool) t.join();
}

}  // namespace

void preprocess_cpu_f32(const std::vector<FaceJob>& jobs, int size, float* out, int num_threads) {
    static const auto lut = [] {
        std::array<float, 256> l{};
        for (int v = 0; v < 256; ++v) l[v] = normalise(static_cast<std::uint8_t>(v));
        return l;
    }();
    run(jobs, size, lut.data(), out, num_threads, pick_f32());
}

void preprocess_cpu_f16(const std::vector<FaceJob>& jobs, int size, std::uint16_t* out, int num_threads) {
    static const auto lut = [] {
        std::array<std::uint16_t, 256> l{};
        for (int v = 0; v < 256; ++v) l[v] = half_bits(normalise(static_cast<std::uint8_t>(v)));
        return l;
    }();
    run(jobs, size, lut.data(), out, num_threads, pick_f16());
}

const char* cpu_kernel_name() { return has_avx2_fma() ? "avx2+fma" : "baseline"; }

}  // namespace maskfr
