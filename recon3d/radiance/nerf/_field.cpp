// recon3d's CPU kernels for the voxel-grid radiance field: ray marching through an occupancy grid,
// trilinear gathers from the feature grid and their scatter back, volume rendering along rays with its
// backward, total variation on the voxels a batch touched, and a lazy Adam step over them.
//
// The readable references are in field.py (PyTorch: grid_sample-style trilinear interpolation and
// `volume_render`, a pure function tested against a closed form); tests compare the two. Plain C ABI.
//
// Conventions: the grid holds R^3 voxels of C floats, voxel (i, j, k) at flat index (i * R + j) * R + k,
// its value sitting at aabb_min + (i, j, k) / (R - 1) * (aabb_max - aabb_min) (corner-aligned) along x, y, z;
// rays are origin + t * direction with unit directions, samples every `step` (world units).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "../_parallel.h"

namespace {

using recon3d::parallel_chunks;
using recon3d::parallel_for;

struct Grid {
    float lo[3], scale[3];  // grid coordinate = (p - lo) * scale, in [0, R - 1]
    int R;
    Grid(const float* aabb, int res) : R(res) {
        for (int a = 0; a < 3; ++a) {
            lo[a] = aabb[a];
            scale[a] = (res - 1) / (aabb[3 + a] - aabb[a]);
        }
    }
    // the 8 corner indices and trilinear weights of point p; false outside the grid
    inline bool corners(const float* p, int64_t* idx, float* w) const {
        int i0[3];
        float f[3];
        for (int a = 0; a < 3; ++a) {
            const float g = (p[a] - lo[a]) * scale[a];
            if (!(g >= 0.0f && g <= (float)(R - 1))) return false;
            i0[a] = std::min((int)g, R - 2);
            f[a] = g - (float)i0[a];
        }
        for (int c = 0; c < 8; ++c) {
            const int dx = c >> 2, dy = (c >> 1) & 1, dz = c & 1;
            idx[c] = ((int64_t)(i0[0] + dx) * R + (i0[1] + dy)) * R + (i0[2] + dz);
            w[c] = (dx ? f[0] : 1 - f[0]) * (dy ? f[1] : 1 - f[1]) * (dz ? f[2] : 1 - f[2]);
        }
        return true;
    }
};

// [t0, t1] of the ray inside the box, or t0 > t1 when it misses
inline void ray_box(const float* o, const float* d, const float* aabb, float& t0, float& t1) {
    t0 = 0.0f;
    t1 = 1e30f;
    for (int a = 0; a < 3; ++a) {
        const float inv = 1.0f / d[a];
        float ta = (aabb[a] - o[a]) * inv, tb = (aabb[3 + a] - o[a]) * inv;
        if (ta > tb) std::swap(ta, tb);
        t0 = std::max(t0, ta);
        t1 = std::min(t1, tb);
    }
}

inline float softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }

}  // namespace

extern "C" {

// Sample n_rays rays (in parallel) from `near` (plus jitter[r] of the first step, jitter in [0, 1)), keeping samples whose
// occupancy cell (occ: G^3 uint8 over `aabb`, the grid's box) is set. With a density grid (`grid` != nullptr:
// R^3 voxels of C floats over `aabb`, channel 0 the density) only the samples that matter are kept, as
// `NerfModel._keep` in model.py: sigma = softplus(d + shift), alpha = 1 - exp(-sigma dt), kept where the weight
// T alpha > min_weight, and the ray stops once its transmittance T fell below 1e-4. Writes offsets
// (n_rays + 1) and, while they fit in `capacity`, each kept sample's t (t_out) and grid-space point
// (points_out, 3 floats; may be nullptr). Returns the total.
// Bounded (contraction == nullptr): every `step` world units up to the far side of the box.
// Contracted (contraction = centre xyz, radius): the grid lives in contracted space, u = (x - centre) / radius
// mapped to c = u where |u|_inf <= 1 and (2 - 1 / |u|_inf) u / |u|_inf beyond (mip-NeRF 360 with the max
// norm); `step` is in grid units, so a sample at |u|_inf = n steps step * radius * max(1, n)^2 world units
// (the contraction shrinks radial distances by 1 / n^2), up to |u|_inf = far.
int64_t march(int threads, int64_t n_rays, const float* origins, const float* dirs, const float* jitter, const float* aabb,
              const uint8_t* occ, int G, float step, float near, const float* contraction, float far,
              const float* grid, int R, int C, float shift, float dt, float min_weight,
              int64_t* offsets, float* t_out, float* points_out, int64_t capacity) {
    const float cell[3] = {G / (aabb[3] - aabb[0]), G / (aabb[4] - aabb[1]), G / (aabb[5] - aabb[2])};
    const Grid g(aabb, R);
    float outer[6];  // the box the samples stay in, world units
    if (contraction) {
        for (int a = 0; a < 3; ++a) {
            outer[a] = contraction[a] - far * contraction[3];
            outer[3 + a] = contraction[a] + far * contraction[3];
        }
    } else {
        std::copy(aabb, aabb + 6, outer);
    }
    // grid-space point of world point x = o + t d (into p) and the world step there
    auto locate = [&](const float* o, const float* d, float t, float* p) {
        for (int a = 0; a < 3; ++a) p[a] = o[a] + t * d[a];
        if (!contraction) return step;
        float m = 0.0f;
        for (int a = 0; a < 3; ++a) {
            p[a] = (p[a] - contraction[a]) / contraction[3];
            m = std::max(m, std::fabs(p[a]));
        }
        if (m > 1.0f)
            for (int a = 0; a < 3; ++a) p[a] *= (2.0f - 1.0f / m) / m;
        return step * contraction[3] * std::max(1.0f, m * m);
    };
    // appends the kept samples of ray r to `out` as (t, x, y, z); returns how many
    auto visit = [&](int64_t r, std::vector<float>& out) {
        const float* o = origins + 3 * r;
        const float* d = dirs + 3 * r;
        float t0, t1, p[3];
        ray_box(o, d, outer, t0, t1);
        t0 = std::max(t0, near);
        t0 += jitter[r] * locate(o, d, t0, p);  // the first sample: a jittered fraction of the first step in
        int64_t n = 0, idx[8];
        float w[8], T = 1.0f;
        float t = t0;
        for (int64_t k = 0; t < t1; ++k) {
            const float dt_world = locate(o, d, t, p);
            int c[3];
            for (int a = 0; a < 3; ++a) c[a] = std::clamp((int)((p[a] - aabb[a]) * cell[a]), 0, G - 1);
            bool keep = occ[((int64_t)c[0] * G + c[1]) * G + c[2]] != 0;
            if (keep && grid) {
                keep = false;
                if (g.corners(p, idx, w)) {
                    float dens = 0.0f;
                    for (int q = 0; q < 8; ++q) dens += w[q] * grid[idx[q] * C];
                    const float alpha = 1.0f - std::exp(-softplus(dens + shift) * dt);
                    keep = T * alpha > min_weight;
                    T *= 1.0f - alpha;
                }
            }
            if (keep) {
                out.insert(out.end(), {t, p[0], p[1], p[2]});
                ++n;
            }
            if (T < 1e-4f) break;
            t = contraction ? t + dt_world : t0 + (float)(k + 1) * step;  // bounded: no drift from summing
        }
        return n;
    };
    constexpr int64_t kChunk = 256;
    const int64_t n_chunks = (n_rays + kChunk - 1) / kChunk;
    std::vector<std::vector<float>> found(n_chunks);  // per chunk of rays: (t, x, y, z) of its kept samples
    std::vector<int64_t> counts(n_rays);
    parallel_for(n_chunks, threads, [&](int64_t b) {
        for (int64_t r = b * kChunk; r < std::min(n_rays, (b + 1) * kChunk); ++r) counts[r] = visit(r, found[b]);
    });
    offsets[0] = 0;
    for (int64_t r = 0; r < n_rays; ++r) offsets[r + 1] = offsets[r] + counts[r];
    if (offsets[n_rays] > capacity) return offsets[n_rays];
    parallel_for(n_chunks, threads, [&](int64_t b) {
        const std::vector<float>& f = found[b];
        const int64_t first = offsets[b * kChunk];
        for (size_t s = 0; s < f.size() / 4; ++s) {
            t_out[first + s] = f[4 * s];
            if (points_out) std::copy(&f[4 * s + 1], &f[4 * s + 4], points_out + 3 * (first + s));
        }
    });
    return offsets[n_rays];
}

// Trilinear gather of C channels at n points (n, 3) -> out (n, C); points outside the grid give zeros.
void gather(int threads, int64_t n, const float* points, const float* grid, int R, int C, const float* aabb,
            float* out) {
    const Grid g(aabb, R);
    parallel_chunks(n, threads, 4096, [&](int64_t lo, int64_t hi) {
        int64_t idx[8];
        float w[8];
        for (int64_t s = lo; s < hi; ++s) {
            float* o = out + s * C;
            std::fill(o, o + C, 0.0f);
            if (!g.corners(points + 3 * s, idx, w)) continue;
            for (int c = 0; c < 8; ++c) {
                const float* v = grid + idx[c] * C;
                for (int ch = 0; ch < C; ++ch) o[ch] += w[c] * v[ch];
            }
        }
    });
}

// Backward of gather: grid_grad (R^3, C) += trilinear scatter of grad (n, C); marks touched voxels
// (touched: R^3 uint8) and appends newly touched ones to `list` (returns the new list length).
int64_t scatter(int64_t n, const float* points, const float* grad, int R, int C, const float* aabb, float* grid_grad,
                uint8_t* touched, int64_t* list, int64_t list_len) {
    const Grid g(aabb, R);
    int64_t idx[8];
    float w[8];
    for (int64_t s = 0; s < n; ++s) {
        if (!g.corners(points + 3 * s, idx, w)) continue;
        const float* gs = grad + s * C;
        for (int c = 0; c < 8; ++c) {
            float* v = grid_grad + idx[c] * C;
            for (int ch = 0; ch < C; ++ch) v[ch] += w[c] * gs[ch];
            if (!touched[idx[c]]) {
                touched[idx[c]] = 1;
                list[list_len++] = idx[c];
            }
        }
    }
    return list_len;
}

// Volume rendering along rays (Max 1995; NeRF eq. 3): alpha_i = 1 - exp(-sigma_i dt_i),
// T_i = prod_{j<i} (1 - alpha_j), colour = sum_i T_i alpha_i c_i + T_final bg, depth = sum_i T_i alpha_i t_i.
// sigma (S,), rgb (S, 3), dt (S,), t (S,) -> color (R, 3), opacity (R,) = 1 - T_final, depth (R,).
void render_rays(int threads, int64_t n_rays, const int64_t* offsets, const float* sigma, const float* rgb,
                 const float* dt, const float* t, const float* bg, float* color, float* opacity, float* depth) {
    parallel_chunks(n_rays, threads, 256, [&](int64_t lo, int64_t hi) {
        for (int64_t r = lo; r < hi; ++r) {
            float T = 1.0f, acc[3] = {0, 0, 0}, dep = 0.0f;
            for (int64_t s = offsets[r]; s < offsets[r + 1]; ++s) {
                const float alpha = 1.0f - std::exp(-sigma[s] * dt[s]);
                const float w = T * alpha;
                for (int ch = 0; ch < 3; ++ch) acc[ch] += w * rgb[3 * s + ch];
                dep += w * t[s];
                T *= 1.0f - alpha;
            }
            for (int ch = 0; ch < 3; ++ch) color[3 * r + ch] = acc[ch] + T * bg[ch];
            opacity[r] = 1.0f - T;
            depth[r] = dep;
        }
    });
}

// Backward of render_rays for grad_color (R, 3), grad_opacity (R,) and grad_depth (R,): depth is a fourth colour
// channel whose value is t_i and whose background is 0. d colour / d c_i = T_i alpha_i; d colour / d sigma_i =
// dt_i (T_{i+1} c_i - S_i), S_i = what lies behind sample i (later samples and the background) as seen from the
// ray origin; d depth / d sigma_i likewise with t_i; d opacity / d sigma_i = dt_i T_final.
void render_rays_backward(int threads, int64_t n_rays, const int64_t* offsets, const float* sigma, const float* rgb,
                          const float* dt, const float* t, const float* bg, const float* grad_color,
                          const float* grad_opacity, const float* grad_depth, float* grad_sigma, float* grad_rgb) {
    parallel_chunks(n_rays, threads, 256, [&](int64_t lo, int64_t hi) {
        std::vector<float> Ts;  // T_i of each sample of the ray, from a forward pass (no division by decays)
        for (int64_t r = lo; r < hi; ++r) {
            const float* gc = grad_color + 3 * r;
            const float gd = grad_depth[r];
            const int64_t s0 = offsets[r], n = offsets[r + 1] - s0;
            Ts.resize(n + 1);
            Ts[0] = 1.0f;
            for (int64_t i = 0; i < n; ++i) Ts[i + 1] = Ts[i] * std::exp(-sigma[s0 + i] * dt[s0 + i]);
            const float T_final = Ts[n];
            float behind = T_final * (gc[0] * bg[0] + gc[1] * bg[1] + gc[2] * bg[2]);  // g . S_i
            for (int64_t i = n - 1; i >= 0; --i) {
                const int64_t s = s0 + i;
                const float w = Ts[i] - Ts[i + 1];  // T_i alpha_i
                float gdot = gd * t[s];
                for (int ch = 0; ch < 3; ++ch) {
                    grad_rgb[3 * s + ch] = w * gc[ch];
                    gdot += gc[ch] * rgb[3 * s + ch];
                }
                grad_sigma[s] = dt[s] * (Ts[i + 1] * gdot - behind) + dt[s] * T_final * grad_opacity[r];
                behind += w * gdot;
            }
        }
    });
}

// Total variation (DVGO's sparse form) added to the gradient of the voxels in `list` (n of them): for each
// channel ch, grad += weight[ch] / 6 * sum over the voxel's (up to 6) face neighbours of clamp(v - v_nb, -1, 1),
// the gradient of a Huber penalty on neighbour differences. Reads values, writes only the listed voxels' grad.
void tv_grad(int threads, int64_t n, const int64_t* list, int R, int C, const float* values, const float* weight,
             float* grad) {
    const int64_t stride[3] = {(int64_t)R * R, R, 1};
    parallel_chunks(n, threads, 4096, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) {
            const int64_t idx = list[i];
            const int64_t coord[3] = {idx / stride[0], idx / R % R, idx % R};
            const float* v = values + idx * C;
            float* g = grad + idx * C;
            for (int a = 0; a < 3; ++a) {
                for (int side = -1; side <= 1; side += 2) {
                    const int64_t c = coord[a] + side;
                    if (c < 0 || c >= R) continue;
                    const float* nb = values + (idx + side * stride[a]) * C;
                    for (int ch = 0; ch < C; ++ch)
                        g[ch] += weight[ch] / 6.0f * std::min(1.0f, std::max(-1.0f, v[ch] - nb[ch]));
                }
            }
        }
    });
}

// Lazy Adam over the voxels in `list` (n of them): param, m, v, grad are (R^3, C); the gradient of each listed
// voxel is consumed (zeroed) and its touched flag cleared. Bias correction with the global step (SparseAdam).
void sparse_adam(int threads, int64_t n, const int64_t* list, int C, float* param, float* grad, float* m, float* v,
                 uint8_t* touched, float lr, float beta1, float beta2, float eps, int64_t step) {
    const float bc1 = 1.0f - std::pow(beta1, (float)step), bc2 = 1.0f - std::pow(beta2, (float)step);
    const float step_size = lr / bc1, inv_bc2 = 1.0f / bc2;
    parallel_chunks(n, threads, 4096, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) {
            const int64_t base = list[i] * C;
            for (int ch = 0; ch < C; ++ch) {
                const int64_t k = base + ch;
                const float g = grad[k];
                m[k] = beta1 * m[k] + (1 - beta1) * g;
                v[k] = beta2 * v[k] + (1 - beta2) * g * g;
                param[k] -= step_size * m[k] / (std::sqrt(v[k] * inv_bc2) + eps);
                grad[k] = 0.0f;
            }
            touched[list[i]] = 0;
        }
    });
}

}  // extern "C"
