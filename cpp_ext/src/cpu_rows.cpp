// Built twice: MFR_ROWS_NS=baseline (default flags, scalar warp_pixel) and, on x86-64,
// MFR_ROWS_NS=avx2 (-mavx2 -mfma -mf16c), where 8 crop pixels are computed per step with the
// same float operations OpenCV's own AVX2 kernel uses, so the results stay bit-identical.
#include "cpu_rows.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define MFR_SIMD 1
#endif

#ifndef MFR_ROWS_NS
#error "define MFR_ROWS_NS"
#endif

namespace maskfr {
namespace MFR_ROWS_NS {
namespace {

#ifdef MFR_SIMD
inline void store8(float* dst, __m256 v) { _mm256_storeu_ps(dst, v); }
inline void store8(std::uint16_t* dst, __m256 v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}

// Crop pixels x..x+7 of row y (all left of OpenCV's scalar tail). mx/my: the unfused row terms.
template <typename T>
inline void warp8(const FaceJob& job, bool gather_ok, int x, __m256 mx, __m256 my, T* dst, std::int64_t plane) {
    const __m256 xs = _mm256_add_ps(_mm256_set1_ps(static_cast<float>(x)), _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256 sx = _mm256_fmadd_ps(_mm256_set1_ps(job.m[0]), xs, mx);
    const __m256 sy = _mm256_fmadd_ps(_mm256_set1_ps(job.m[3]), xs, my);
    const __m256 fx = _mm256_floor_ps(sx), fy = _mm256_floor_ps(sy);
    const __m256 w = _mm256_set1_ps(static_cast<float>(job.width));
    const __m256 h = _mm256_set1_ps(static_cast<float>(job.height));
    const __m256 one = _mm256_set1_ps(1.0f), minus_one = _mm256_set1_ps(-1.0f);
    // Some tap inside: floor in [-1, size) on both axes.
    const __m256 any = _mm256_and_ps(
        _mm256_and_ps(_mm256_cmp_ps(fx, minus_one, _CMP_GE_OQ), _mm256_cmp_ps(fx, w, _CMP_LT_OQ)),
        _mm256_and_ps(_mm256_cmp_ps(fy, minus_one, _CMP_GE_OQ), _mm256_cmp_ps(fy, h, _CMP_LT_OQ)));
    const int any_mask = _mm256_movemask_ps(any);
    if (any_mask == 0) {
        const __m256 zero = _mm256_set1_ps(-1.0f);  // normalised value of a black (0) pixel
        store8(dst + x, zero), store8(dst + plane + x, zero), store8(dst + 2 * plane + x, zero);
        return;
    }
    const __m256 a = _mm256_sub_ps(sx, fx), b = _mm256_sub_ps(sy, fy);
    // Fast path: all taps of all lanes inside, and a row below the lower taps, so the 4-byte
    // gathers (which read one byte past the 3 wanted) stay inside the frame buffer.
    const __m256 fast = _mm256_and_ps(
        _mm256_and_ps(_mm256_cmp_ps(fx, _mm256_setzero_ps(), _CMP_GE_OQ), _mm256_cmp_ps(fx, _mm256_sub_ps(w, one), _CMP_LT_OQ)),
        _mm256_and_ps(_mm256_cmp_ps(fy, _mm256_setzero_ps(), _CMP_GE_OQ), _mm256_cmp_ps(fy, _mm256_sub_ps(h, _mm256_set1_ps(2.0f)), _CMP_LT_OQ)));
    __m256i px[4];  // taps 00 01 10 11 as 8 x (B | G << 8 | R << 16 | junk << 24)
    if (gather_ok && _mm256_movemask_ps(fast) == 0xff) {
        const __m256i pitch = _mm256_set1_epi32(static_cast<int>(job.pitch));
        const __m256i off = _mm256_add_epi32(_mm256_mullo_epi32(_mm256_cvttps_epi32(fy), pitch),
                                             _mm256_mullo_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(3)));
        const __m256i three = _mm256_set1_epi32(3);
        const int* base = reinterpret_cast<const int*>(job.frame);
        px[0] = _mm256_i32gather_epi32(base, off, 1);
        px[1] = _mm256_i32gather_epi32(base, _mm256_add_epi32(off, three), 1);
        px[2] = _mm256_i32gather_epi32(base, _mm256_add_epi32(off, pitch), 1);
        px[3] = _mm256_i32gather_epi32(base, _mm256_add_epi32(_mm256_add_epi32(off, pitch), three), 1);
    } else {
        alignas(32) int ix[8], iy[8];
        alignas(32) std::uint32_t taps[4][8];
        // Lanes with no tap inside may hold huge or NaN coordinates: zero them before converting.
        _mm256_store_si256(reinterpret_cast<__m256i*>(ix), _mm256_cvttps_epi32(_mm256_and_ps(fx, any)));
        _mm256_store_si256(reinterpret_cast<__m256i*>(iy), _mm256_cvttps_epi32(_mm256_and_ps(fy, any)));
        const std::uint8_t* f = job.frame;
        for (int i = 0; i < 8; ++i) {
            const bool lane = (any_mask >> i) & 1;
            const bool x0 = lane && ix[i] >= 0, x1 = lane && ix[i] + 1 < job.width;
            const bool y0 = lane && iy[i] >= 0, y1 = lane && iy[i] + 1 < job.height;
            const std::int64_t o = static_cast<std::int64_t>(iy[i]) * job.pitch + static_cast<std::int64_t>(ix[i]) * 3;
            const std::int64_t at[4] = {o, o + 3, o + job.pitch, o + job.pitch + 3};
            const bool in[4] = {y0 && x0, y0 && x1, y1 && x0, y1 && x1};
            for (int t = 0; t < 4; ++t) {
                taps[t][i] = in[t] ? (f[at[t]] | f[at[t] + 1] << 8 | f[at[t] + 2] << 16) : 0u;
            }
        }
        for (int t = 0; t < 4; ++t) px[t] = _mm256_load_si256(reinterpret_cast<const __m256i*>(taps[t]));
    }
    const __m256 mean = _mm256_set1_ps(127.5f), lo = _mm256_setzero_ps(), hi = _mm256_set1_ps(255.0f);
    for (int c = 0; c < 3; ++c) {
        __m256 p[4];
        for (int t = 0; t < 4; ++t) {
            p[t] = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(px[t], 8 * c), _mm256_set1_epi32(0xff)));
        }
        const __m256 v0 = _mm256_fmadd_ps(a, _mm256_sub_ps(p[1], p[0]), p[0]);
        const __m256 v1 = _mm256_fmadd_ps(a, _mm256_sub_ps(p[3], p[2]), p[2]);
        __m256 v = _mm256_fmadd_ps(b, _mm256_sub_ps(v1, v0), v0);
        v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
        store8(dst + (2 - c) * plane + x, _mm256_div_ps(_mm256_sub_ps(v, mean), mean));  // BGR -> RGB planes
    }
}
#endif

// Crop rows [begin, end) of the batch, numbered face-major. Scalar pixels (all of them in the
// baseline build, OpenCV's tail columns in the AVX2 one) go through the 256-entry LUT.
template <typename T>
void rows(const FaceJob* jobs, int size, const T* lut, T* out, std::int64_t begin, std::int64_t end) {
    const std::int64_t plane = static_cast<std::int64_t>(size) * size;
    const int vec_end = size - size % kOpenCvLanes;
    for (std::int64_t r = begin; r < end; ++r) {
        const std::int64_t n = r / size;
        const int y = static_cast<int>(r % size);
        const FaceJob& job = jobs[n];
        T* dst = out + n * 3 * plane + static_cast<std::int64_t>(y) * size;
        int x = 0;
#ifdef MFR_SIMD
        const float yf = static_cast<float>(y);
        const __m256 mx = _mm256_set1_ps(add_rn(mul_rn(yf, job.m[1]), job.m[2]));
        const __m256 my = _mm256_set1_ps(add_rn(mul_rn(yf, job.m[4]), job.m[5]));
        // 32-bit gather offsets: only for frames under 2 GiB.
        const bool gather_ok = job.pitch * (job.height + 1) < (std::int64_t{1} << 31);
        for (; x < vec_end; x += 8) warp8(job, gather_ok, x, mx, my, dst, plane);
#endif
        for (; x < size; ++x) {
            std::uint8_t rgb[3];
            warp_pixel(job, x, y, vec_end, rgb);
            dst[x] = lut[rgb[0]];
            dst[plane + x] = lut[rgb[1]];
            dst[2 * plane + x] = lut[rgb[2]];
        }
    }
}

}  // namespace

void rows_f32(const FaceJob* jobs, int size, const float* lut, float* out, std::int64_t begin, std::int64_t end) {
    rows(jobs, size, lut, out, begin, end);
}

void rows_f16(const FaceJob* jobs, int size, const std::uint16_t* lut, std::uint16_t* out, std::int64_t begin,
              std::int64_t end) {
    rows(jobs, size, lut, out, begin, end);
}

}  // namespace MFR_ROWS_NS
}  // namespace maskfr
