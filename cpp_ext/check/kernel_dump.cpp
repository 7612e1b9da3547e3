// Runs the CPU kernel on fixed pseudo-random frames and similarity matrices and writes its float32 and
// float16 outputs to stdout, so builds for other CPUs (aarch64 under qemu: benchmarks/aarch64_check.sh)
// can be compared byte for byte with the x86-64 build that tests/test_ext.py checks against OpenCV.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "../src/preprocess_cpu.h"

namespace {

std::uint64_t state = 0x9e3779b97f4a7c15ull;

double uniform() {  // splitmix64: the same numbers on every platform
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return static_cast<double>((z ^ (z >> 31)) >> 11) / 9007199254740992.0;
}

}  // namespace

int main() {
    constexpr int kSize = 112, kFaces = 64;
    const int dims[3][2] = {{480, 640}, {53, 37}, {101, 77}};  // odd sizes and a face bigger than its frame
    std::vector<std::vector<std::uint8_t>> frames;
    for (const auto& d : dims) {
        std::vector<std::uint8_t> f(static_cast<std::size_t>(d[0]) * d[1] * 3);
        for (auto& v : f) v = static_cast<std::uint8_t>(uniform() * 256.0);
        frames.push_back(std::move(f));
    }
    std::vector<maskfr::FaceJob> jobs(kFaces);
    for (int i = 0; i < kFaces; ++i) {
        const int k = i % 3;
        const double scale = 0.1 + 2.0 * uniform(), angle = (uniform() - 0.5) * 2.0 * M_PI;
        const double c = scale * std::cos(angle), s = scale * std::sin(angle);
        // frame -> crop: rotate and scale about a centre that may lie near or past the frame's edge
        const double cx = (uniform() * 1.4 - 0.2) * dims[k][1], cy = (uniform() * 1.4 - 0.2) * dims[k][0];
        const double m[6] = {c, -s, kSize / 2.0 - c * cx + s * cy, s, c, kSize / 2.0 - s * cx - c * cy};
        jobs[i] = maskfr::FaceJob{frames[k].data(), dims[k][1] * 3, dims[k][0], dims[k][1], {}};
        maskfr::invert_affine(m, jobs[i].m);
    }
    const std::size_t n = static_cast<std::size_t>(kFaces) * 3 * kSize * kSize;
    std::vector<float> f32(n);
    std::vector<std::uint16_t> f16(n);
    maskfr::preprocess_cpu_f32(jobs, kSize, f32.data(), 2);
    maskfr::preprocess_cpu_f16(jobs, kSize, f16.data(), 2);
    std::fwrite(f32.data(), sizeof(float), n, stdout);
    std::fwrite(f16.data(), sizeof(std::uint16_t), n, stdout);
    std::fprintf(stderr, "kernel: %s\n", maskfr::cpu_kernel_name());
    return 0;
}
