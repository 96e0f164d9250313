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
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
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

// One row of the horizontal pass: dst[x] = sum_k g[k] padded[x + k], x < W, where padded (W + 10) is the row
// reflect-padded by 5 (see pad_row).
inline void blur_row(const float* padded, int W, float* dst) {
    for (int x = 0; x < W; ++x) dst[x] = 0.0f;
    for (int k = 0; k < kWindow; ++k) {
        const float gk = kG.g[k];
        const float* r = padded + k;
        for (int x = 0; x < W; ++x) dst[x] += gk * r[x];
    }
}

// Fill padded[0, 5) and padded[W + 5, W + 10) with the mirrors of the row in padded[5, W + 5).
inline void pad_row(float* padded, int W) {
    for (int m = 0; m < kHalf; ++m) {
        padded[m] = padded[kHalf + reflect(m - kHalf, W)];
        padded[W + kHalf + m] = padded[kHalf + reflect(W + m, W)];
    }
}

// One row of the vertical pass over planes (H, W): dst[x] = sum_k g[k] plane[reflect(y + k - 5)][x].
inline void blur_column(const float* plane, int H, int W, int y, float* dst) {
    for (int x = 0; x < W; ++x) dst[x] = 0.0f;
    for (int k = 0; k < kWindow; ++k) {
        const float gk = kG.g[k];
        const float* r = plane + (size_t)reflect(y + k - kHalf, H) * W;
        for (int x = 0; x < W; ++x) dst[x] += gk * r[x];
    }
}

// One row of the adjoint of the horizontal pass: dst (W) = the adjoint applied to src (W).
inline void blur_row_adjoint(const float* src, int W, float* row /* W + 10 scratch */, float* dst) {
    for (int x = 0; x < W + 2 * kHalf; ++x) row[x] = 0.0f;
    for (int k = 0; k < kWindow; ++k) {
        const float gk = kG.g[k];
        float* r = row + k;
        for (int x = 0; x < W; ++x) r[x] += gk * src[x];
    }
    for (int x = 0; x < W; ++x) dst[x] = row[x + kHalf];
    for (int m = 0; m < kHalf; ++m) {  // the padding folded back onto the pixels it mirrored
        dst[reflect(m - kHalf, W)] += row[m];
        dst[reflect(W + m, W)] += row[W + kHalf + m];
    }
}

// The SSIM terms at one pixel from its local means: S and its derivatives by mu_x, m_xx and m_xy.
struct Terms {
    float s, d_mu, d_xx, d_xy;
    Terms(float mx, float my, float xx, float yy, float xy) {
        const float a1 = 2 * mx * my + kC1, a2 = 2 * (xy - mx * my) + kC2;
        const float b1 = mx * mx + my * my + kC1, b2 = xx - mx * mx + yy - my * my + kC2;
        const float inv = 1.0f / (b1 * b2);
        s = a1 * a2 * inv;
        d_mu = (2 * my * a2 - 2 * my * a1) * inv - s * (2 * mx / b1 - 2 * mx / b2);
        d_xx = -s / b2;
        d_xy = 2 * a1 * inv;
    }
};

}  // namespace

extern "C" {

// Mean SSIM of pred and target (H, W, C) float32. Writes the local means into maps (5, C, H, W): mu_x,
// mu_y, m_xx, m_yy, m_xy, for ssim_backward. Rows are shared out over the threads, pass by pass.
double ssim_forward(int threads, int H, int W, int C, const float* pred, const float* target, float* maps) {
    const size_t P = (size_t)H * W;
    const std::unique_ptr<float[]> rows(new float[(size_t)5 * C * P]);  // the horizontal pass, as maps (every
    // value is written before it is read: no zeroing of megabytes)
    recon3d::parallel_chunks(H, threads, 8, [&](int64_t lo, int64_t hi) {
        const int L = W + 2 * kHalf;  // x, y, x^2, y^2, xy of one row and channel, each reflect-padded
        std::vector<float> q((size_t)5 * L);
        for (int64_t y = lo; y < hi; ++y)
            for (int c = 0; c < C; ++c) {
                for (int x = 0; x < W; ++x) {
                    const size_t i = ((size_t)y * W + x) * C + c;
                    const float a = pred[i], b = target[i];
                    q[kHalf + x] = a; q[L + kHalf + x] = b; q[2 * L + kHalf + x] = a * a;
                    q[3 * L + kHalf + x] = b * b; q[4 * L + kHalf + x] = a * b;
                }
                for (int k = 0; k < 5; ++k) {
                    pad_row(q.data() + (size_t)k * L, W);
                    blur_row(q.data() + (size_t)k * L, W, rows.get() + ((size_t)k * C + c) * P + y * W);
                }
            }
    });
    std::vector<double> sums(H, 0.0);
    recon3d::parallel_chunks(H, threads, 8, [&](int64_t lo, int64_t hi) {
        for (int64_t y = lo; y < hi; ++y) {
            for (int plane = 0; plane < 5 * C; ++plane)
                blur_column(rows.get() + plane * P, H, W, (int)y, maps + plane * P + y * W);
            double s = 0;
            for (int c = 0; c < C; ++c) {
                const size_t o = y * W;
                const float *mx = maps + c * P + o, *my = maps + (C + c) * P + o, *xx = maps + (2 * C + c) * P + o;
                const float *yy = maps + (3 * C + c) * P + o, *xy = maps + (4 * C + c) * P + o;
                float row = 0.0f;  // a row's sum in float, in any order (vectorised); rows summed in double
#pragma omp simd reduction(+ : row)
                for (int x = 0; x < W; ++x) row += Terms(mx[x], my[x], xx[x], yy[x], xy[x]).s;
                s += row;
            }
            sums[y] = s;
        }
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
    // dL/dmu_x, dL/dm_xx, dL/dm_xy per channel (3, C, H, W); then the adjoint of the vertical pass, by rows
    const std::unique_ptr<float[]> d(new float[(size_t)3 * C * P]), spread(new float[(size_t)3 * C * P]);
    recon3d::parallel_chunks(H, threads, 8, [&](int64_t lo, int64_t hi) {
        for (int c = 0; c < C; ++c)
            for (size_t i = lo * W; i < (size_t)hi * W; ++i) {
                const Terms t(maps[c * P + i], maps[(C + c) * P + i], maps[(2 * C + c) * P + i],
                              maps[(3 * C + c) * P + i], maps[(4 * C + c) * P + i]);
                d[c * P + i] = w * t.d_mu;
                d[(C + c) * P + i] = w * t.d_xx;
                d[(2 * C + c) * P + i] = w * t.d_xy;
            }
    });
    // the vertical pass read row reflect(y + k - 5) with weight g[k]: row j gathers from every y that read it
    recon3d::parallel_chunks(H, threads, 8, [&](int64_t lo, int64_t hi) {
        for (int64_t j = lo; j < hi; ++j)
            for (int plane = 0; plane < 3 * C; ++plane) {
                float* dst = spread.get() + plane * P + j * W;
                const float* src = d.get() + plane * P;
                for (int x = 0; x < W; ++x) dst[x] = 0.0f;
                for (int k = 0; k < kWindow; ++k) {  // rows y = j - k + 5 read it directly
                    const int64_t y = j - k + kHalf;
                    if (y < 0 || y >= H) continue;
                    const float gk = kG.g[k];
                    for (int x = 0; x < W; ++x) dst[x] += gk * src[y * W + x];
                }
                if (j > kHalf && j < H - 1 - kHalf) continue;  // no mirrored read lands here
                for (int64_t y = std::max<int64_t>(0, j - 2 * kHalf); y <= std::min<int64_t>(H - 1, j + 2 * kHalf); ++y)
                    for (int k = 0; k < kWindow; ++k) {  // rows whose padding mirrored row j
                        const int m = (int)y + k - kHalf;
                        if ((m >= 0 && m < H) || reflect(m, H) != j) continue;
                        const float gk = kG.g[k];
                        for (int x = 0; x < W; ++x) dst[x] += gk * src[y * W + x];
                    }
            }
    });
    recon3d::parallel_chunks(H, threads, 8, [&](int64_t lo, int64_t hi) {
        std::vector<float> adj((size_t)3 * W), scratch(W + 2 * kHalf);
        for (int64_t y = lo; y < hi; ++y)
            for (int c = 0; c < C; ++c) {
                for (int q = 0; q < 3; ++q)
                    blur_row_adjoint(spread.get() + ((size_t)q * C + c) * P + y * W, W, scratch.data(),
                                     adj.data() + (size_t)q * W);
                for (int x = 0; x < W; ++x) {
                    const size_t i = ((size_t)y * W + x) * C + c;
                    grad_pred[i] = adj[x] + 2 * pred[i] * adj[W + x] + target[i] * adj[2 * W + x];
                }
            }
    });
}

}  // extern "C"
