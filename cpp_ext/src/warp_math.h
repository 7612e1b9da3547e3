// Per-pixel math shared by the CPU and CUDA kernels, so both reproduce the reference
// (cv2.warpAffine INTER_LINEAR / BORDER_CONSTANT 0 on uint8 BGR, then RGB and (x - 127.5) / 127.5).
//
// OpenCV >= 4.11 (the installed 5.0 included) no longer uses the old fixed-point path
// (AB_BITS=10, INTER_BITS=5, 1<<15 weight table) for 8-bit linear warpAffine: its new SIMD
// kernels (modules/imgproc/src/warp_kernels.simd.hpp) work in float32:
//   * M is inverted in double, then cast to float;
//   * vector columns: sx = fma(M0, x, float(y*M1) + M2)   (row term NOT fused);
//     scalar tail columns (x >= size - size % lanes): sx = fma(x, M0, float(y*M1)) + M2;
//   * ix = floor(sx), a = sx - ix; taps outside the frame read 0;
//   * v0 = fma(a, p01 - p00, p00), v1 = fma(a, p11 - p10, p10), v = fma(b, v1 - v0, v0);
//   * round half to even, saturate to uint8.
// This was checked bit-exact against cv2 5.0.0 on millions of pixels (tests/test_ext.py keeps
// checking it). OpenCV 5.1 on x86 hands this warp to Intel IPP (coordinates in double, one grey level
// off in 1 of 800 to 5,000 samples) unless IPP is switched off, as maskfr.align.warp_face does; with IPP off,
// 5.1 runs the kernel above and matches bit for bit too. Every float operation below is spelled out so the compiler cannot re-associate or
// fuse it (the CPU build also uses -ffp-contract=off).
#pragma once

#include <cstddef>
#include <cstdint>

// static: each translation unit keeps its own copy, so the copy compiled with -mavx2 -mfma
// (rows_avx2) can never be merged into, and then run by, the baseline x86-64 code.
#ifdef __CUDACC__
#define MFR_HD static __host__ __device__ __forceinline__
#else
#define MFR_HD static inline
#endif

namespace maskfr {

// Output columns per SIMD step in OpenCV's x86 AVX2 kernel (2 x 8 float lanes). Columns past the
// last full step go through OpenCV's scalar tail, whose coordinate rounding differs in rare
// pixels. 16 matches the x86-64 opencv-python wheels; for ARM NEON builds of OpenCV it would be 8
// (only sizes that are not a multiple of 16 are affected, and only in about 1 pixel in 10^5).
constexpr int kOpenCvLanes = 16;

// One face to crop: its frame and the inverse (crop -> frame) matrix as OpenCV's float32.
struct FaceJob {
    const std::uint8_t* frame;  // BGR rows, 3 bytes per pixel
    std::int64_t pitch;         // bytes per frame row
    int height;
    int width;
    float m[6];
};

// Inverts a 2x3 frame->crop matrix exactly like cv::warpAffine (double math, zero when singular).
MFR_HD void invert_affine(const double* a, float* out) {
    double m[6] = {a[0], a[1], a[2], a[3], a[4], a[5]};
    double d = m[0] * m[4] - m[1] * m[3];
    d = d != 0.0 ? 1.0 / d : 0.0;
    const double a11 = m[4] * d, a22 = m[0] * d;
    m[0] = a11;
    m[1] *= -d;
    m[3] *= -d;
    m[4] = a22;
    const double b1 = -m[0] * m[2] - m[1] * m[5];
    const double b2 = -m[3] * m[2] - m[4] * m[5];
    m[2] = b1;
    m[5] = b2;
    for (int i = 0; i < 6; ++i) out[i] = static_cast<float>(m[i]);
}

MFR_HD float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

MFR_HD float add_rn(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}

MFR_HD float sub_rn(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}

// Fused a*b+c rounded once to float. Without FMA hardware (baseline x86-64 build) the product of
// two floats is exact in double, so one double add then the cast to float equals fmaf except for
// double-rounding ties (about 1 in 2^29 operations); a libm fmaf call per tap would be far slower.
MFR_HD float fma_rn(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
    return __fmaf_rn(a, b, c);
#elif defined(__FMA__) || defined(__aarch64__)
    return __builtin_fmaf(a, b, c);
#else
    return static_cast<float>(static_cast<double>(a) * static_cast<double>(b) + static_cast<double>(c));
#endif
}

// Round half to even for 0 <= v < 2^22 (all interpolated values here), then saturate to uint8.
MFR_HD std::uint8_t round_u8(float v) {
#ifdef __CUDA_ARCH__
    int r = __float2int_rn(v);
#else
    const float magic = 12582912.0f;  // 1.5 * 2^23: adding it drops the fraction with RNE
    int r = static_cast<int>(sub_rn(add_rn(v, magic), magic));
#endif
    return static_cast<std::uint8_t>(r < 0 ? 0 : (r > 255 ? 255 : r));
}

// Crop pixel (x, y) of `job` as RGB. `vec_end` = first column handled by OpenCV's scalar tail.
MFR_HD void warp_pixel(const FaceJob& job, int x, int y, int vec_end, std::uint8_t rgb[3]) {
    const float* m = job.m;
    const float xf = static_cast<float>(x), yf = static_cast<float>(y);
    float sx, sy;
    if (x < vec_end) {
        sx = fma_rn(m[0], xf, add_rn(mul_rn(yf, m[1]), m[2]));
        sy = fma_rn(m[3], xf, add_rn(mul_rn(yf, m[4]), m[5]));
    } else {
        sx = add_rn(fma_rn(xf, m[0], mul_rn(yf, m[1])), m[2]);
        sy = add_rn(fma_rn(xf, m[3], mul_rn(yf, m[4])), m[5]);
    }
    // floor(sx) in [-1, width) <=> sx in [-1, width): otherwise all four taps are outside. The
    // negated test also catches NaN and huge coordinates before any int conversion.
    if (!(sx >= -1.0f && sx < static_cast<float>(job.width) && sy >= -1.0f && sy < static_cast<float>(job.height))) {
        rgb[0] = rgb[1] = rgb[2] = 0;
        return;
    }
    int ix = static_cast<int>(sx), iy = static_cast<int>(sy);  // truncation, then floor fix-up
    ix -= static_cast<float>(ix) > sx;
    iy -= static_cast<float>(iy) > sy;
    const float a = sub_rn(sx, static_cast<float>(ix)), b = sub_rn(sy, static_cast<float>(iy));
    const bool x0 = ix >= 0, x1 = ix + 1 < job.width, y0 = iy >= 0, y1 = iy + 1 < job.height;
    const bool inside = x0 && x1 && y0 && y1;
    const std::int64_t o00 = static_cast<std::int64_t>(iy) * job.pitch + static_cast<std::int64_t>(ix) * 3;
    const std::int64_t o10 = o00 + job.pitch;
    const std::uint8_t* f = job.frame;
    for (int c = 0; c < 3; ++c) {
        float p00, p01, p10, p11;
        if (inside) {  // the common case: no per-tap tests
            p00 = f[o00 + c], p01 = f[o00 + c + 3], p10 = f[o10 + c], p11 = f[o10 + c + 3];
        } else {
            p00 = (y0 && x0) ? f[o00 + c] : 0.0f;
            p01 = (y0 && x1) ? f[o00 + c + 3] : 0.0f;
            p10 = (y1 && x0) ? f[o10 + c] : 0.0f;
            p11 = (y1 && x1) ? f[o10 + c + 3] : 0.0f;
        }
        const float v0 = fma_rn(a, sub_rn(p01, p00), p00);
        const float v1 = fma_rn(a, sub_rn(p11, p10), p10);
        rgb[2 - c] = round_u8(fma_rn(b, sub_rn(v1, v0), v0));  // BGR -> RGB
    }
}

// Normalised network input value of a uint8 sample, exactly as numpy computes it in float32.
MFR_HD float normalise(std::uint8_t v) {
#ifdef __CUDA_ARCH__
    return __fdiv_rn(__fsub_rn(static_cast<float>(v), 127.5f), 127.5f);
#else
    return (static_cast<float>(v) - 127.5f) / 127.5f;
#endif
}

}  // namespace maskfr
