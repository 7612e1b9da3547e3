// pybind11 bindings: argument validation (clear ValueErrors), then the kernels run without the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "preprocess_cpu.h"
#include "warp_math.h"
#ifdef MASKFR_WITH_CUDA
#include "preprocess_cuda.h"
#endif

namespace py = pybind11;
using maskfr::FaceJob;

namespace {

constexpr int kMaxSize = 4096;

std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

// Returns the output dtype's element size: 4 (float32) or 2 (float16).
int check_dtype(const py::object& dtype) {
    const py::dtype dt = py::dtype::from_args(dtype);
    // equal(), not kind/itemsize: a non-native byte order ('>f4' on x86) would get native bytes.
    if (dt.equal(py::dtype::of<float>()) || dt.equal(py::dtype("float16"))) return static_cast<int>(dt.itemsize());
    throw py::value_error("dtype must be float32 or float16, got " + py::str(dt).cast<std::string>());
}

void check_size(int size) {
    if (size < 1 || size > kMaxSize) {
        throw py::value_error("size must be in [1, " + std::to_string(kMaxSize) + "], got " + std::to_string(size));
    }
}

// Host frames: numpy uint8 (H, W, 3), C-contiguous, H and W >= 1.
std::vector<py::array> check_frames(const py::sequence& frames) {
    std::vector<py::array> out;
    out.reserve(frames.size());
    for (std::size_t i = 0; i < frames.size(); ++i) {
        py::object f = frames[i];
        const std::string name = "frames[" + std::to_string(i) + "]";
        if (!py::isinstance<py::array>(f)) throw py::value_error(name + " must be a numpy array");
        auto a = py::reinterpret_borrow<py::array>(f);
        if (!a.dtype().equal(py::dtype::of<std::uint8_t>())) {
            throw py::value_error(name + " must be uint8, got " + py::str(a.dtype()).cast<std::string>());
        }
        if (a.ndim() != 3 || a.shape(2) != 3 || a.shape(0) < 1 || a.shape(1) < 1) {
            throw py::value_error(name + " must have shape (H, W, 3) with H, W >= 1, got " + shape_str(a));
        }
        if (!(a.flags() & py::array::c_style)) {
            throw py::value_error(name + " must be C-contiguous (use np.ascontiguousarray)");
        }
        out.push_back(a);
    }
    return out;
}

// One job per face from the frame index and the (N, 2, 3) frame->crop matrices. `frame_of(i)`
// gives frame i's pointer, pitch and size (already validated).
template <typename FrameOf>
std::vector<FaceJob> make_jobs(const py::object& frame_index, const py::object& matrices, std::size_t num_frames,
                               FrameOf frame_of) {
    const py::array idx_any = py::array::ensure(frame_index);
    if (!idx_any || (idx_any.dtype().kind() != 'i' && idx_any.dtype().kind() != 'u') || idx_any.ndim() != 1) {
        throw py::value_error("frame_index must be a 1-D integer array");
    }
    const auto idx = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>::ensure(idx_any);
    const py::ssize_t n = idx.shape(0);

    const py::array mat_any = py::array::ensure(matrices);
    if (!mat_any || mat_any.dtype().kind() != 'f') throw py::value_error("matrices must be a float array of shape (N, 2, 3)");
    const auto mat = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(mat_any);
    if (mat.ndim() != 3 || mat.shape(0) != n || mat.shape(1) != 2 || mat.shape(2) != 3) {
        throw py::value_error("matrices must have shape (N, 2, 3) with N = len(frame_index) = " + std::to_string(n) +
                              ", got " + shape_str(mat));
    }
    std::vector<FaceJob> jobs(static_cast<std::size_t>(n));
    const std::int64_t* ip = idx.data();
    const double* mp = mat.data();
    for (py::ssize_t i = 0; i < n; ++i) {
        if (ip[i] < 0 || static_cast<std::uint64_t>(ip[i]) >= num_frames) {
            throw py::value_error("frame_index[" + std::to_string(i) + "] = " + std::to_string(ip[i]) +
                                  " is out of range for " + std::to_string(num_frames) + " frames");
        }
        for (int k = 0; k < 6; ++k) {
            if (!std::isfinite(mp[6 * i + k])) {
                throw py::value_error("matrices[" + std::to_string(i) + "] has a non-finite entry");
            }
        }
        FaceJob& job = jobs[static_cast<std::size_t>(i)];
        frame_of(static_cast<std::size_t>(ip[i]), job);
        maskfr::invert_affine(mp + 6 * i, job.m);
    }
    return jobs;
}

py::array preprocess_cpu(const py::sequence& frames, const py::object& frame_index, const py::object& matrices,
                         int size, const py::object& dtype, const py::object& out, int num_threads) {
    check_size(size);
    const int itemsize = check_dtype(dtype);
    const std::vector<py::array> fr = check_frames(frames);
    std::vector<FaceJob> jobs = make_jobs(frame_index, matrices, fr.size(), [&](std::size_t f, FaceJob& job) {
        job.frame = static_cast<const std::uint8_t*>(fr[f].data());
        job.height = static_cast<int>(fr[f].shape(0));
        job.width = static_cast<int>(fr[f].shape(1));
        job.pitch = static_cast<std::int64_t>(fr[f].strides(0));
    });
    const auto n = static_cast<py::ssize_t>(jobs.size());
    const std::vector<py::ssize_t> shape{n, 3, size, size};
    const py::dtype dt = py::dtype::from_args(dtype);
    py::array result;
    if (out.is_none()) {
        result = py::array(dt, shape);
    } else {
        if (!py::isinstance<py::array>(out)) throw py::value_error("out must be a numpy array or None");
        result = py::reinterpret_borrow<py::array>(out);
        if (!result.dtype().equal(dt)) {
            throw py::value_error("out has dtype " + py::str(result.dtype()).cast<std::string>() + ", expected " +
                                  py::str(dt).cast<std::string>());
        }
        bool ok = result.ndim() == 4;
        for (int i = 0; ok && i < 4; ++i) ok = result.shape(i) == shape[static_cast<std::size_t>(i)];
        if (!ok) {
            throw py::value_error("out must have shape (" + std::to_string(n) + ", 3, " + std::to_string(size) + ", " +
                                  std::to_string(size) + "), got " + shape_str(result));
        }
        if (!(result.flags() & py::array::c_style)) throw py::value_error("out must be C-contiguous");
        if (!result.writeable()) throw py::value_error("out must be writeable");
    }
    void* dst = result.mutable_data();
    {
        py::gil_scoped_release release;
        if (itemsize == 4) {
            maskfr::preprocess_cpu_f32(jobs, size, static_cast<float*>(dst), num_threads);
        } else {
            maskfr::preprocess_cpu_f16(jobs, size, static_cast<std::uint16_t*>(dst), num_threads);
        }
    }
    return result;
}

bool cuda_available() {
#ifdef MASKFR_WITH_CUDA
    return maskfr::cuda::available();
#else
    return false;
#endif
}

void preprocess_cuda(const py::sequence& frames, const py::object& frame_index, const py::object& matrices,
                     std::uintptr_t out_ptr, int size, const py::object& dtype, std::uintptr_t stream,
                     const std::vector<std::uintptr_t>& wait_streams) {
#ifdef MASKFR_WITH_CUDA
    check_size(size);
    const int itemsize = check_dtype(dtype);
    // An empty batch (empty frame list, zero-size `out` whose pointer is 0) is valid, as on the CPU:
    // frame_index is range-checked and out_ptr is checked once the batch is known to be non-empty.
    const bool on_host = frames.size() == 0 || py::isinstance<py::array>(frames[0]);
    std::vector<py::array> host;
    std::vector<maskfr::cuda::HostFrame> host_frames;
    std::vector<FaceJob> device_frames;  // frame, pitch, height, width of each device frame
    if (on_host) {
        host = check_frames(frames);
        for (const py::array& a : host) {
            host_frames.push_back({static_cast<const std::uint8_t*>(a.data()), static_cast<std::int64_t>(a.nbytes())});
        }
    } else {
        for (std::size_t i = 0; i < frames.size(); ++i) {
            const std::string name = "frames[" + std::to_string(i) + "]";
            py::tuple t;
            try {
                t = frames[i].cast<py::tuple>();
            } catch (const py::cast_error&) {
                throw py::value_error(name + " must be a numpy array or a (ptr, height, width, pitch) tuple");
            }
            if (t.size() != 4) throw py::value_error(name + " must be a (ptr, height, width, pitch) tuple");
            FaceJob f{};
            f.frame = reinterpret_cast<const std::uint8_t*>(t[0].cast<std::uintptr_t>());
            f.height = t[1].cast<int>();
            f.width = t[2].cast<int>();
            f.pitch = t[3].cast<std::int64_t>();
            if (!f.frame || f.height < 1 || f.width < 1 || f.pitch < 3LL * f.width) {
                throw py::value_error(name + ": need ptr != 0, height, width >= 1 and pitch >= 3 * width");
            }
            device_frames.push_back(f);
        }
    }
    const std::size_t num_frames = on_host ? host.size() : device_frames.size();
    std::vector<FaceJob> jobs = make_jobs(frame_index, matrices, num_frames, [&](std::size_t f, FaceJob& job) {
        if (on_host) {
            job.frame = reinterpret_cast<const std::uint8_t*>(f);  // index, rebased on the device copy
            job.height = static_cast<int>(host[f].shape(0));
            job.width = static_cast<int>(host[f].shape(1));
            job.pitch = static_cast<std::int64_t>(host[f].strides(0));
        } else {
            job.frame = device_frames[f].frame;
            job.height = device_frames[f].height;
            job.width = device_frames[f].width;
            job.pitch = device_frames[f].pitch;
        }
    });
    if (jobs.empty()) return;
    if (out_ptr == 0) throw py::value_error("out_ptr must be a device pointer, got 0");
    if (out_ptr % static_cast<std::uintptr_t>(itemsize) != 0) {
        throw py::value_error("out_ptr is not aligned to its " + std::to_string(itemsize) + "-byte elements");
    }
    py::gil_scoped_release release;  // the first CUDA call of the process may take a while (runtime set-up)
    const maskfr::cuda::DeviceScope scope(out_ptr);  // runs the batch on out's GPU
    for (std::size_t i = 0; i < device_frames.size(); ++i) {
        const auto ptr = reinterpret_cast<std::uintptr_t>(device_frames[i].frame);
        scope.check_usable(ptr, "frames[" + std::to_string(i) + "]");
    }
    maskfr::cuda::preprocess(host_frames, std::move(jobs), size, itemsize == 2, out_ptr, stream, wait_streams);
#else
    (void)frames, (void)frame_index, (void)matrices, (void)out_ptr, (void)size, (void)dtype, (void)stream,
        (void)wait_streams;
    throw std::runtime_error("maskfr._ext was built without CUDA (MASKFR_CUDA=OFF or no CUDA toolkit)");
#endif
}

}  // namespace

PYBIND11_MODULE(_ext, m) {
    m.doc() = "Fused face preprocessing: warp (cv2.warpAffine-exact) + BGR->RGB + normalise + NCHW";
#ifdef MASKFR_WITH_CUDA
    m.attr("has_cuda") = true;
#else
    m.attr("has_cuda") = false;
#endif
    m.attr("opencv_lanes") = maskfr::kOpenCvLanes;
    m.def("preprocess", &preprocess_cpu, py::arg("frames"), py::arg("frame_index"), py::arg("matrices"),
          py::arg("size") = 112, py::arg("dtype") = py::dtype::of<float>(), py::arg("out") = py::none(),
          py::arg("num_threads") = 0,
          "Crop faces from uint8 BGR frames into a normalised (N, 3, size, size) RGB array on the CPU.");
    m.def("cpu_kernel", &maskfr::cpu_kernel_name, "Row kernel used on this CPU: 'avx2+fma' or 'baseline'.");
    m.def("cuda_available", &cuda_available, "True when built with CUDA and a CUDA device is visible.");
    m.def("preprocess_cuda", &preprocess_cuda, py::arg("frames"), py::arg("frame_index"), py::arg("matrices"),
          py::arg("out_ptr"), py::arg("size") = 112, py::arg("dtype") = py::dtype::of<float>(),
          py::arg("stream") = 0, py::arg("wait_streams") = std::vector<std::uintptr_t>{},
          "Same as preprocess, written to the device buffer out_ptr (on its GPU) on `stream` (asynchronous). "
          "frames: host numpy arrays, or (device_ptr, height, width, row_pitch_bytes) tuples on out's GPU. "
          "wait_streams: streams whose queued work on out / the frames must finish first (CUDA Array "
          "Interface v3 `stream` values).");
}
