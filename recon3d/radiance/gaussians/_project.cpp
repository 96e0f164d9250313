// recon3d's CPU projection + SH kernel for rendering without gradients, and a stable radix depth sort.
//
// Twin of `project.project` + `sh.sh_to_rgb` (PyTorch, differentiable; the reference) for the render path,
// where autograd's bookkeeping over (N, 16, 3) tensors costs more than the compositing itself. Same
// formulas, same float32 arithmetic order where it matters; tests compare the two. Plain C ABI (ctypes).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../_parallel.h"

namespace {

using recon3d::parallel_chunks;
using recon3d::parallel_for;

constexpr float kAlphaMin = 1.0f / 255.0f;
constexpr float C0 = 0.28209479177387814f, C1 = 0.4886025119029199f;
constexpr float C2[5] = {1.0925484305920792f, -1.0925484305920792f, 0.31539156525252005f, -1.0925484305920792f,
                         0.5462742152960396f};
constexpr float C3[7] = {-0.5900435899266435f, 2.890611442640554f, -0.4570457994644658f, 0.3731763325901154f,
                         -0.4570457994644658f, 1.445305721320277f, -0.5900435899266435f};

// The real SH basis (3DGS / gsplat convention) at unit direction (x, y, z), degree 0..3: basis[(d+1)^2].
inline void sh_basis(int degree, float x, float y, float z, float* b) {
    b[0] = C0;
    if (degree < 1) return;
    b[1] = -C1 * y; b[2] = C1 * z; b[3] = -C1 * x;
    if (degree < 2) return;
    const float xx = x * x, yy = y * y, zz = z * z, xy = x * y, yz = y * z, xz = x * z;
    b[4] = C2[0] * xy; b[5] = C2[1] * yz; b[6] = C2[2] * (2 * zz - xx - yy); b[7] = C2[3] * xz;
    b[8] = C2[4] * (xx - yy);
    if (degree < 3) return;
    b[9] = C3[0] * y * (3 * xx - yy); b[10] = C3[1] * xy * z; b[11] = C3[2] * y * (4 * zz - xx - yy);
    b[12] = C3[3] * z * (2 * zz - 3 * xx - 3 * yy); b[13] = C3[4] * x * (4 * zz - xx - yy);
    b[14] = C3[5] * z * (xx - yy); b[15] = C3[6] * x * (xx - 3 * yy);
}

}  // namespace

extern "C" {

// Project n Gaussians (see project.py for the formulas and culling) and colour them: from SH coefficients
// `colors` (n, K, 3) at `degree` (K >= (degree + 1)^2), or plain RGB (n, 3) when degree < 0.
// cam_from_world (4, 4) and Kmat (3, 3) row-major. Writes the V visible ones, in index order, into
// ids (V,), means2d (V, 2), conics (V, 3), depths (V,), opac (V,), extents (V, 2), rgb (V, 3), each
// sized for n by the caller, and returns V.
int64_t project_sh(int threads, int64_t n, const float* means, const float* quats, const float* scales,
                   const float* opacities, const float* colors, int K, int degree, const float* cfw,
                   const float* Km, int width, int height, float near, float far, float eps2d, int64_t* ids,
                   float* means2d, float* conics, float* depths, float* opac, float* extents, float* rgb) {
    const float fx = Km[0], fy = Km[4], cx = Km[2], cy = Km[5];
    const float lim_x = 0.3f * 0.5f * width / fx, lim_y = 0.3f * 0.5f * height / fy;
    const float max_extent = 4.0f * std::max(width, height);
    const float R[9] = {cfw[0], cfw[1], cfw[2], cfw[4], cfw[5], cfw[6], cfw[8], cfw[9], cfw[10]};
    const float t[3] = {cfw[3], cfw[7], cfw[11]};
    // camera centre -R^T t, for the view directions of the SH colours
    const float cc[3] = {-(R[0] * t[0] + R[3] * t[1] + R[6] * t[2]), -(R[1] * t[0] + R[4] * t[1] + R[7] * t[2]),
                         -(R[2] * t[0] + R[5] * t[1] + R[8] * t[2])};
    std::vector<uint8_t> keep(n, 0);
    parallel_chunks(n, threads, 8192, [&](int64_t lo, int64_t hi) {
        for (int64_t g = lo; g < hi; ++g) {
            const float* m = means + 3 * g;
            const float op = opacities[g];
            const float z = R[6] * m[0] + R[7] * m[1] + R[8] * m[2] + t[2];
            if (!(z > near && z < far && op > kAlphaMin)) continue;
            const float x = R[0] * m[0] + R[1] * m[1] + R[2] * m[2] + t[0];
            const float y = R[3] * m[0] + R[4] * m[1] + R[5] * m[2] + t[1];
            const float tx = z * std::clamp(x / z, -(cx / fx + lim_x), (width - cx) / fx + lim_x);
            const float ty = z * std::clamp(y / z, -(cy / fy + lim_y), (height - cy) / fy + lim_y);
            const float J[6] = {fx / z, 0.0f, -fx * tx / (z * z), 0.0f, fy / z, -fy * ty / (z * z)};
            const float* q = quats + 4 * g;
            const float qn = std::sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
            const float inv = 1.0f / std::max(qn, 1e-12f);
            const float w = q[0] * inv, qx = q[1] * inv, qy = q[2] * inv, qz = q[3] * inv;
            const float Rq[9] = {1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - w * qz), 2 * (qx * qz + w * qy),
                                 2 * (qx * qy + w * qz), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - w * qx),
                                 2 * (qx * qz - w * qy), 2 * (qy * qz + w * qx), 1 - 2 * (qx * qx + qy * qy)};
            const float* s = scales + 3 * g;
            float JR[6], M[6];  // J @ R (2x3), then (J @ R @ Rq) * scale
            for (int r = 0; r < 2; ++r)
                for (int c = 0; c < 3; ++c)
                    JR[3 * r + c] = J[3 * r] * R[c] + J[3 * r + 1] * R[3 + c] + J[3 * r + 2] * R[6 + c];
            for (int r = 0; r < 2; ++r)
                for (int c = 0; c < 3; ++c)
                    M[3 * r + c] = (JR[3 * r] * Rq[c] + JR[3 * r + 1] * Rq[3 + c] + JR[3 * r + 2] * Rq[6 + c]) * s[c];
            const float a = M[0] * M[0] + M[1] * M[1] + M[2] * M[2] + eps2d;
            const float b = M[0] * M[3] + M[1] * M[4] + M[2] * M[5];
            const float c = M[3] * M[3] + M[4] * M[4] + M[5] * M[5] + eps2d;
            const float det = a * c - b * b;
            const float u = fx * x / z + cx, v = fy * y / z + cy;
            const float r = std::sqrt(2.0f * std::log(255.0f * op));
            const float ex = std::min(r * std::sqrt(a), max_extent), ey = std::min(r * std::sqrt(c), max_extent);
            if (!(det > 0 && u + ex > 0 && u - ex < width && v + ey > 0 && v - ey < height && std::isfinite(u) &&
                  std::isfinite(v) && std::isfinite(ex) && std::isfinite(ey)))
                continue;
            keep[g] = 1;
            means2d[2 * g] = u; means2d[2 * g + 1] = v;
            conics[3 * g] = c / det; conics[3 * g + 1] = -b / det; conics[3 * g + 2] = a / det;
            depths[g] = z; opac[g] = op;
            extents[2 * g] = ex; extents[2 * g + 1] = ey;
            float* out = rgb + 3 * g;
            if (degree < 0) {
                for (int ch = 0; ch < 3; ++ch) out[ch] = colors[3 * g + ch];
                continue;
            }
            float d[3] = {m[0] - cc[0], m[1] - cc[1], m[2] - cc[2]};
            const float dn = 1.0f / std::max(std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]), 1e-12f);
            float basis[16];
            sh_basis(degree, d[0] * dn, d[1] * dn, d[2] * dn, basis);
            const int nb = (degree + 1) * (degree + 1);
            const float* sh = colors + (size_t)g * K * 3;
            float acc[3] = {0.0f, 0.0f, 0.0f};  // coefficients in memory order
            for (int k = 0; k < nb; ++k)
                for (int ch = 0; ch < 3; ++ch) acc[ch] += basis[k] * sh[3 * k + ch];
            for (int ch = 0; ch < 3; ++ch) out[ch] = std::max(acc[ch] + 0.5f, 0.0f);
        }
    });
    int64_t v = 0;  // compact in index order (in place: v <= g)
    for (int64_t g = 0; g < n; ++g) {
        if (!keep[g]) continue;
        ids[v] = g;
        means2d[2 * v] = means2d[2 * g]; means2d[2 * v + 1] = means2d[2 * g + 1];
        for (int i = 0; i < 3; ++i) conics[3 * v + i] = conics[3 * g + i];
        depths[v] = depths[g]; opac[v] = opac[g];
        extents[2 * v] = extents[2 * g]; extents[2 * v + 1] = extents[2 * g + 1];
        for (int i = 0; i < 3; ++i) rgb[3 * v + i] = rgb[3 * g + i];
        ++v;
    }
    return v;
}

// Stable ascending order of n float keys (LSD radix sort, 3 passes of 11 bits on the order-preserving
// integer image of the float): order (n,) int64. Equal keys keep their index order, as torch's stable sort.
void depth_order(int64_t n, const float* keys, int64_t* order) {
    std::vector<uint32_t> k(n), k2(n);
    std::vector<int64_t> o2(n);
    for (int64_t i = 0; i < n; ++i) {
        uint32_t u;
        std::memcpy(&u, keys + i, 4);
        k[i] = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
        order[i] = i;
    }
    for (int shift = 0; shift < 32; shift += 11) {
        std::vector<int64_t> count(2049, 0);
        for (int64_t i = 0; i < n; ++i) count[((k[i] >> shift) & 2047) + 1]++;
        for (int b = 0; b < 2048; ++b) count[b + 1] += count[b];
        for (int64_t i = 0; i < n; ++i) {
            const int64_t dst = count[(k[i] >> shift) & 2047]++;
            k2[dst] = k[i];
            o2[dst] = order[i];
        }
        k.swap(k2);
        std::copy(o2.begin(), o2.end(), order);
    }
}

}  // extern "C"
