// recon3d's CPU projection + SH kernel, forward and hand-written backward, and a stable radix depth sort.
//
// Twin of `project.project` + `sh.sh_to_rgb` (PyTorch, differentiable; the reference), where autograd's
// bookkeeping over (N, 16, 3) tensors costs more than the arithmetic. Same formulas, same float32 arithmetic
// order where it matters; tests compare the two, values and gradients. Plain C ABI (ctypes).
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

// The camera of a call: rotation, translation, intrinsics, the field-of-view clamp of the Jacobian, eps2d.
struct Camera {
    float R[9], t[3], fx, fy, cx, cy, lo_x, hi_x, lo_y, hi_y, eps2d;
    Camera(const float* cfw, const float* Km, int width, int height, float eps) {
        for (int r = 0; r < 3; ++r) {
            for (int c = 0; c < 3; ++c) R[3 * r + c] = cfw[4 * r + c];
            t[r] = cfw[4 * r + 3];
        }
        fx = Km[0]; fy = Km[4]; cx = Km[2]; cy = Km[5];
        const float lim_x = 0.3f * 0.5f * width / fx, lim_y = 0.3f * 0.5f * height / fy;
        lo_x = -(cx / fx + lim_x); hi_x = (width - cx) / fx + lim_x;
        lo_y = -(cy / fy + lim_y); hi_y = (height - cy) / fy + lim_y;
        eps2d = eps;
    }
};

// One Gaussian seen by one camera: the intermediate values of project.py's formulas, shared by the forward
// and the backward (which recomputes them rather than storing them).
struct Geometry {
    float x, y, z, tx, ty, J[6], q[4], Rq[9], JR[6], N[6], M[6], a, b, c, det;
    // q: the normalised quaternion (w, x, y, z); N = J R Rq; M = N diag(scale); (a, b, c) the 2D covariance
    void compute(const Camera& cam, const float* m, const float* quat, const float* s) {
        const float* R = cam.R;
        z = R[6] * m[0] + R[7] * m[1] + R[8] * m[2] + cam.t[2];
        x = R[0] * m[0] + R[1] * m[1] + R[2] * m[2] + cam.t[0];
        y = R[3] * m[0] + R[4] * m[1] + R[5] * m[2] + cam.t[1];
        tx = z * std::clamp(x / z, cam.lo_x, cam.hi_x);
        ty = z * std::clamp(y / z, cam.lo_y, cam.hi_y);
        J[0] = cam.fx / z; J[1] = 0.0f; J[2] = -cam.fx * tx / (z * z);
        J[3] = 0.0f; J[4] = cam.fy / z; J[5] = -cam.fy * ty / (z * z);
        const float qn = std::sqrt(quat[0] * quat[0] + quat[1] * quat[1] + quat[2] * quat[2] + quat[3] * quat[3]);
        const float inv = 1.0f / std::max(qn, 1e-12f);
        for (int i = 0; i < 4; ++i) q[i] = quat[i] * inv;
        const float w = q[0], qx = q[1], qy = q[2], qz = q[3];
        const float rq[9] = {1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - w * qz), 2 * (qx * qz + w * qy),
                             2 * (qx * qy + w * qz), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - w * qx),
                             2 * (qx * qz - w * qy), 2 * (qy * qz + w * qx), 1 - 2 * (qx * qx + qy * qy)};
        std::copy(rq, rq + 9, Rq);
        for (int r = 0; r < 2; ++r)
            for (int k = 0; k < 3; ++k)
                JR[3 * r + k] = J[3 * r] * R[k] + J[3 * r + 1] * R[3 + k] + J[3 * r + 2] * R[6 + k];
        for (int r = 0; r < 2; ++r)
            for (int k = 0; k < 3; ++k) {
                N[3 * r + k] = JR[3 * r] * Rq[k] + JR[3 * r + 1] * Rq[3 + k] + JR[3 * r + 2] * Rq[6 + k];
                M[3 * r + k] = N[3 * r + k] * s[k];
            }
        a = M[0] * M[0] + M[1] * M[1] + M[2] * M[2] + cam.eps2d;
        b = M[0] * M[3] + M[1] * M[4] + M[2] * M[5];
        c = M[3] * M[3] + M[4] * M[4] + M[5] * M[5] + cam.eps2d;
        det = a * c - b * b;
    }
};

// The camera centre -R^T t, for the view directions of the SH colours.
inline void camera_centre(const Camera& cam, float* cc) {
    const float* R = cam.R;
    for (int k = 0; k < 3; ++k) cc[k] = -(R[k] * cam.t[0] + R[3 + k] * cam.t[1] + R[6 + k] * cam.t[2]);
}

// The SH basis (degree + 1)^2 at the unit direction from the camera centre cc to the mean m.
inline void view_basis(int degree, const float* m, const float* cc, float* basis) {
    const float d[3] = {m[0] - cc[0], m[1] - cc[1], m[2] - cc[2]};
    const float dn = 1.0f / std::max(std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]), 1e-12f);
    sh_basis(degree, d[0] * dn, d[1] * dn, d[2] * dn, basis);
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
    const Camera cam(cfw, Km, width, height, eps2d);
    const float max_extent = 4.0f * std::max(width, height);
    float cc[3];
    camera_centre(cam, cc);
    std::vector<uint8_t> keep(n, 0);
    parallel_chunks(n, threads, 8192, [&](int64_t lo, int64_t hi) {
        for (int64_t g = lo; g < hi; ++g) {
            const float* m = means + 3 * g;
            const float op = opacities[g];
            const float* R = cam.R;
            const float zc = R[6] * m[0] + R[7] * m[1] + R[8] * m[2] + cam.t[2];
            if (!(zc > near && zc < far && op > kAlphaMin)) continue;
            Geometry e;
            e.compute(cam, m, quats + 4 * g, scales + 3 * g);
            const float u = cam.fx * e.x / e.z + cam.cx, v = cam.fy * e.y / e.z + cam.cy;
            const float r = std::sqrt(2.0f * std::log(255.0f * op));
            const float ex = std::min(r * std::sqrt(e.a), max_extent), ey = std::min(r * std::sqrt(e.c), max_extent);
            if (!(e.det > 0 && u + ex > 0 && u - ex < width && v + ey > 0 && v - ey < height && std::isfinite(u) &&
                  std::isfinite(v) && std::isfinite(ex) && std::isfinite(ey)))
                continue;
            keep[g] = 1;
            means2d[2 * g] = u; means2d[2 * g + 1] = v;
            conics[3 * g] = e.c / e.det; conics[3 * g + 1] = -e.b / e.det; conics[3 * g + 2] = e.a / e.det;
            depths[g] = e.z; opac[g] = op;
            extents[2 * g] = ex; extents[2 * g + 1] = ey;
            float* out = rgb + 3 * g;
            if (degree < 0) {
                for (int ch = 0; ch < 3; ++ch) out[ch] = colors[3 * g + ch];
                continue;
            }
            float basis[16];
            view_basis(degree, m, cc, basis);
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

// Backward of project_sh for its V visible Gaussians ids (V,): from the gradients of means2d (V, 2), conics
// (V, 3), depths (V,), opac (V,) and rgb (V, 3) (rgb: project_sh's output, for the clamp at 0), adds into
// g_means (n, 3), g_quats (n, 4), g_scales (n, 3), g_opacities (n,), g_colors (n, K, 3) (zeroed by the
// caller). As the reference: the SH view direction carries no gradient to the mean (it is detached there).
void project_sh_backward(int threads, int64_t V, const int64_t* ids, const float* means, const float* quats,
                         const float* scales, int K, int degree, const float* cfw, const float* Km, int width,
                         int height, float eps2d, const float* rgb, const float* gm2d, const float* gconic,
                         const float* gdepth, const float* gopac, const float* grgb, float* g_means,
                         float* g_quats, float* g_scales, float* g_opacities, float* g_colors) {
    const Camera cam(cfw, Km, width, height, eps2d);
    float cc[3];
    camera_centre(cam, cc);
    parallel_chunks(V, threads, 4096, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) {
            const int64_t g = ids[i];
            const float* m = means + 3 * g;
            const float* s = scales + 3 * g;
            Geometry e;
            e.compute(cam, m, quats + 4 * g, s);
            // conic = (c, -b, a) / det
            const float A = gconic[3 * i], B = gconic[3 * i + 1], C = gconic[3 * i + 2];
            const float id = 1.0f / e.det, id2 = id * id;
            const float ga = -A * e.c * e.c * id2 + B * e.b * e.c * id2 + C * (id - e.a * e.c * id2);
            const float gb = 2 * A * e.b * e.c * id2 + B * (-id - 2 * e.b * e.b * id2) + 2 * C * e.a * e.b * id2;
            const float gc = A * (id - e.a * e.c * id2) + B * e.a * e.b * id2 - C * e.a * e.a * id2;
            // a = |M0|^2 + eps, b = M0 . M1, c = |M1|^2 + eps (M0, M1: the rows of M)
            float gM[6];
            for (int k = 0; k < 3; ++k) {
                gM[k] = 2 * ga * e.M[k] + gb * e.M[3 + k];
                gM[3 + k] = 2 * gc * e.M[3 + k] + gb * e.M[k];
            }
            // M = N diag(s), N = JR Rq, JR = J R
            float gN[6], gRq[9] = {0}, gJR[6], gJ[6];
            for (int k = 0; k < 3; ++k) {
                g_scales[3 * g + k] += gM[k] * e.N[k] + gM[3 + k] * e.N[3 + k];
                gN[k] = gM[k] * s[k];
                gN[3 + k] = gM[3 + k] * s[k];
            }
            for (int r = 0; r < 2; ++r)
                for (int a = 0; a < 3; ++a) {
                    float acc = 0;
                    for (int b = 0; b < 3; ++b) {
                        gRq[3 * a + b] += e.JR[3 * r + a] * gN[3 * r + b];
                        acc += gN[3 * r + b] * e.Rq[3 * a + b];
                    }
                    gJR[3 * r + a] = acc;
                }
            for (int r = 0; r < 2; ++r)
                for (int k = 0; k < 3; ++k)
                    gJ[3 * r + k] = gJR[3 * r] * cam.R[3 * k] + gJR[3 * r + 1] * cam.R[3 * k + 1] +
                                    gJR[3 * r + 2] * cam.R[3 * k + 2];
            // Rq of the normalised quaternion, then the normalisation
            const float w = e.q[0], qx = e.q[1], qy = e.q[2], qz = e.q[3];
            const float* G = gRq;
            const float gq[4] = {
                2 * (-qz * G[1] + qy * G[2] + qz * G[3] - qx * G[5] - qy * G[6] + qx * G[7]),
                2 * (qy * G[1] + qz * G[2] + qy * G[3] - 2 * qx * G[4] - w * G[5] + qz * G[6] + w * G[7] - 2 * qx * G[8]),
                2 * (-2 * qy * G[0] + qx * G[1] + w * G[2] + qx * G[3] + qz * G[5] - w * G[6] + qz * G[7] - 2 * qy * G[8]),
                2 * (-2 * qz * G[0] - w * G[1] + qx * G[2] + w * G[3] - 2 * qz * G[4] + qy * G[5] + qx * G[6] + qy * G[7])};
            const float* quat = quats + 4 * g;
            const float qn = std::max(std::sqrt(quat[0] * quat[0] + quat[1] * quat[1] + quat[2] * quat[2] +
                                                quat[3] * quat[3]), 1e-12f);
            const float dot = gq[0] * e.q[0] + gq[1] * e.q[1] + gq[2] * e.q[2] + gq[3] * e.q[3];
            for (int k = 0; k < 4; ++k) g_quats[4 * g + k] += (gq[k] - e.q[k] * dot) / qn;
            // J from (tx, ty, z); tx = z clamp(x / z), ty likewise; means2d = (fx x / z + cx, fy y / z + cy)
            const float z = e.z, z2 = z * z, z3 = z2 * z;
            float gx = 0, gy = 0;
            float gz = -cam.fx / z2 * gJ[0] - cam.fy / z2 * gJ[4] + 2 * cam.fx * e.tx / z3 * gJ[2] +
                       2 * cam.fy * e.ty / z3 * gJ[5];
            const float gtx = -cam.fx / z2 * gJ[2], gty = -cam.fy / z2 * gJ[5];
            const float rx = e.x / z, ry = e.y / z;
            if (rx >= cam.lo_x && rx <= cam.hi_x) gx += gtx; else gz += gtx * std::clamp(rx, cam.lo_x, cam.hi_x);
            if (ry >= cam.lo_y && ry <= cam.hi_y) gy += gty; else gz += gty * std::clamp(ry, cam.lo_y, cam.hi_y);
            const float gu = gm2d[2 * i], gv = gm2d[2 * i + 1];
            gx += cam.fx / z * gu;
            gy += cam.fy / z * gv;
            gz += -cam.fx * e.x / z2 * gu - cam.fy * e.y / z2 * gv + gdepth[i];
            // p = R m + t
            for (int k = 0; k < 3; ++k)
                g_means[3 * g + k] += cam.R[k] * gx + cam.R[3 + k] * gy + cam.R[6 + k] * gz;
            g_opacities[g] += gopac[i];
            // colours: rgb = max(SH . basis + 0.5, 0), or the colour itself
            float* gcol = g_colors + (size_t)g * K * 3;
            if (degree < 0) {
                for (int ch = 0; ch < 3; ++ch) gcol[ch] += grgb[3 * i + ch];
                continue;
            }
            float basis[16];
            view_basis(degree, m, cc, basis);
            float gout[3];
            for (int ch = 0; ch < 3; ++ch) gout[ch] = rgb[3 * i + ch] > 0.0f ? grgb[3 * i + ch] : 0.0f;
            for (int k = 0; k < (degree + 1) * (degree + 1); ++k)
                for (int ch = 0; ch < 3; ++ch) gcol[3 * k + ch] += basis[k] * gout[ch];
        }
    });
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
