// Parallel loops for recon3d's C++ kernels: OpenMP, so that inside a Python process that has loaded torch
// they run on torch's own OpenMP thread pool (the library links libgomp.so.1 by soname, which resolves to the
// copy torch already loaded). A second pool of plain threads would fight torch's spinning workers for the
// cores after every torch op.
#pragma once
#include <algorithm>
#include <cstdint>

namespace recon3d {

// body(i) for i in [0, n), dynamically scheduled over `threads` threads.
template <typename F>
void parallel_for(int64_t n, int threads, F body) {
    threads = (int)std::max<int64_t>(1, std::min<int64_t>(threads, n));
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t i = 0; i < n; ++i) body(i);
}

// body(lo, hi) over [0, n) in chunks of `chunk`.
template <typename F>
void parallel_chunks(int64_t n, int threads, int64_t chunk, F body) {
    parallel_for((n + chunk - 1) / chunk, threads,
                 [&](int64_t b) { body(b * chunk, std::min(n, (b + 1) * chunk)); });
}

}  // namespace recon3d
