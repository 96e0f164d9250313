// recon3d's CPU SSIM kernel: forward and hand-written backward of `metrics.ssim` for the trainers' D-SSIM loss.
//
// The readable reference is `ssim` in metrics.py (PyTorch, autograd); tests compare the two, value and
// gradient. Plain C ABI (called through ctypes), built by radiance/native.py.
//
// The definition (Wang et al. 2004, as metrics.py): per channel, the 11-tap Gaussian window (sigma 1.5) is
// applied separably to x, y, x^2, y^2 and xy over the image reflect-padded by 5 pixels (torch's "reflect":
// index -1 reads index 1); with mu_x, mu_y, m_xx, m_yy, m_xy those local means,
//   S = (2 mu_x mu_y + C1) (2 (m_xy - mu_x mu_y) + C2) / ((mu_x^2 + mu_y^2 + C1) (m_xx - mu_x^2 + m_yy - mu_y^2 + C2))
// and the result is the mean of S over every pixel and channel. Only x (the render) gets a gradient:
//   dL/dx = B'(dL/dmu_x) + 2 x B'(dL/dm_xx) + y B'(dL/dm_xy),
// where B' is the adjoint of the padded blur (the blur of the zero-extended map, whose padding is then folded
// back onto the pixels it mirrored).
#include <cmath>
#include <cstdint>
#include <vector>

#include "_parallel.h"

namespace {

constexpr int kWindow = 11, kHalf = 5;
constexpr float kC1 = 0.01f * 0.01f, kC2 = 0.03f * 0.03f;

struct Window {
    float g[kWindow];
    Window() {
        double w[kWindow], sum = 0;
        for (int k = 0; k < kWindow; ++k) sum += w[k] = std::exp(-(k - kHalf) * (k - kHalf) / (2 * 1.5 * 1.5));
        for (int k = 0; k < kWindow; ++k) g[k] = (float)(w[k] / sum);
    }
};
const Window kG;

inline int reflect(int i, int n) { return i < 0 ? -i : (i >= n ? 2 * (n - 1) - i : i); }

// out (H, W) = the padded blur of plane (H, W): rows first, then columns, as metrics.py's two conv2d.
void blur(const float* plane, int H, int W, float* out) {
    std::vector<float> row(W + 2 * kHalf), tmp((size_t)H * W);
    for (int y = 0; y < H; ++y) {
        const float* src = plane + (size_t)y * W;
        for (int x = -kHalf; x < W + kHalf; ++x) row[x + kHalf] = src[reflect(x, W)];
        float* dst = tmp.data() + (size_t)y * W;
        for (int x = 0; x < W; ++x) dst[x] = 0.0f;
        for (int k = 0; k < kWindow; ++k) {
            const float gk = kG.g[k];
            const float* r = row.data() + k;
            for (int x = 0; x < W; ++x) dst[x] += gk * r[x];
        }
    }
    for (int y = 0; y < H; ++y) {
        float* dst = out + (size_t)y * W;
        for (int x = 0; x < W; ++x) dst[x] = 0.0f;
        for (int k = 0; k < kWindow; ++k) {
            const float gk = kG.g[k];
            const float* r = tmp.data() + (size_t)reflect(y + k - kHalf, H) * W;
            for (int x = 0; x < W; ++x) dst[x] += gk * r[x];
        }
    }
}

// out (H, W) = the adjoint of `blur` applied to plane (H, W).
void blur_adjoint(const float* plane, int H, int W, float* out) {
    // columns: spread each row over the padded rows it was read into, then fold the padding back
    std::vector<float> pad((size_t)(H + 2 * kHalf) * W, 0.0f);
    for (int y = 0; y < H; ++y) {
        const float* src = plane + (size_t)y * W;
        for (int k = 0; k < kWindow; ++k) {
            const float gk = kG.g[k];
            float* dst = pad.data() + (size_t)(y + k) * W;
            for (int x = 0; x < W; ++x) dst[x] += gk * src[x];
        }
    }
    std::vector<float> tmp(pad.begin() + (size_t)kHalf * W, pad.begin() + (size_t)(kHalf + H) * W);
    for (int m = 0; m < kHalf; ++m) {  // padded rows above and below the image: mirrors of rows inside it
        const int above = reflect(m - kHalf, H), below = reflect(H + m, H);
        const float* a = pad.data() + (size_t)m * W;
        const float* b = pad.data() + (size_t)(H + kHalf + m) * W;
        for (int x = 0; x < W; ++x) {
            tmp[(size_t)above * W + x] += a[x];
            tmp[(size_t)below * W + x] += b[x];
        }
    }
    // rows: the same along each row
    std::vector<float> row(W + 2 * kHalf);
    for (int y = 0; y < H; ++y) {
        const float* src = tmp.data() + (size_t)y * W;
        std::fill(row.begin(), row.end(), 0.0f);
        for (int k = 0; k < kWindow; ++k) {
            const float gk = kG.g[k];
            float* r = row.data() + k;
            for (int x = 0; x < W; ++x) r[x] += gk * src[x];
        }
        float* dst = out + (size_t)y * W;
        for (int x = 0; x < W; ++x) dst[x] = row[x + kHalf];
        for (int m = 0; m < kHalf; ++m) {
            dst[reflect(m - kHalf, W)] += row[m];
            dst[reflect(W + m, W)] += row[W + kHalf + m];
        }
    }
}

}  // namespace

extern "C" {

// Mean SSIM of pred and target (H, W, C) float32. Writes the local means into maps (5, C, H, W): mu_x,
// mu_y, m_xx, m_yy, m_xy, for ssim_backward.
double ssim_forward(int threads, int H, int W, int C, const float* pred, const float* target, float* maps) {
    const size_t P = (size_t)H * W;
    recon3d::parallel_for(5 * C, threads, [&](int64_t task) {
        const int q = (int)(task / C), c = (int)(task % C);
        std::vector<float> plane(P);
        for (size_t i = 0; i < P; ++i) {
            const float x = pred[i * C + c], y = target[i * C + c];
            plane[i] = q == 0 ? x : q == 1 ? y : q == 2 ? x * x : q == 3 ? y * y : x * y;
        }
        blur(plane.data(), H, W, maps + ((size_t)q * C + c) * P);
    });
    std::vector<double> sums(C, 0.0);
    recon3d::parallel_for(C, threads, [&](int64_t c) {
        const float* mx = maps + (0 * C + c) * P;
        const float* my = maps + (1 * C + c) * P;
        const float* xx = maps + (2 * C + c) * P;
        const float* yy = maps + (3 * C + c) * P;
        const float* xy = maps + (4 * C + c) * P;
        double s = 0;
        for (size_t i = 0; i < P; ++i) {
            const float a1 = 2 * mx[i] * my[i] + kC1, a2 = 2 * (xy[i] - mx[i] * my[i]) + kC2;
            const float b1 = mx[i] * mx[i] + my[i] * my[i] + kC1;
            const float b2 = xx[i] - mx[i] * mx[i] + yy[i] - my[i] * my[i] + kC2;
            s += a1 * a2 / (b1 * b2);
        }
        sums[c] = s;
    });
    double total = 0;
    for (double s : sums) total += s;
    return total / ((double)P * C);
}

// grad_pred (H, W, C) = d(grad * mean SSIM)/d pred, from ssim_forward's maps.
void ssim_backward(int threads, int H, int W, int C, const float* pred, const float* target, const float* maps,
                   float grad, float* grad_pred) {
    const size_t P = (size_t)H * W;
    const float w = grad / (float)(P * C);
    std::vector<float> adj((size_t)3 * C * P);  // adjoint-blurred dL/dmu_x, dL/dm_xx, dL/dm_xy per channel
    recon3d::parallel_for(3 * C, threads, [&](int64_t task) {
        const int q = (int)(task / C), c = (int)(task % C);
        const float* mx = maps + (0 * C + c) * P;
        const float* my = maps + (1 * C + c) * P;
        const float* xx = maps + (2 * C + c) * P;
        const float* yy = maps + (3 * C + c) * P;
        const float* xy = maps + (4 * C + c) * P;
        std::vector<float> d(P);
        for (size_t i = 0; i < P; ++i) {
            const float a1 = 2 * mx[i] * my[i] + kC1, a2 = 2 * (xy[i] - mx[i] * my[i]) + kC2;
            const float b1 = mx[i] * mx[i] + my[i] * my[i] + kC1;
            const float b2 = xx[i] - mx[i] * mx[i] + yy[i] - my[i] * my[i] + kC2;
            const float inv = 1.0f / (b1 * b2), s = a1 * a2 * inv;
            if (q == 0)
                d[i] = w * ((2 * my[i] * a2 - 2 * my[i] * a1) * inv - s * (2 * mx[i] / b1 - 2 * mx[i] / b2));
            else if (q == 1)
                d[i] = w * (-s / b2);
            else
                d[i] = w * (2 * a1 * inv);
        }
        blur_adjoint(d.data(), H, W, adj.data() + ((size_t)q * C + c) * P);
    });
    recon3d::parallel_chunks((int64_t)P, threads, 16384, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i)
            for (int c = 0; c < C; ++c) {
                const size_t ic = (size_t)i * C + c;
                grad_pred[ic] = adj[(0 * C + c) * P + i] + 2 * pred[ic] * adj[(1 * C + c) * P + i] +
                                target[ic] * adj[(2 * C + c) * P + i];
            }
    });
}

}  // extern "C"
