// recon3d's CPU compositing kernel for 3D Gaussian splatting: tile binning, forward and backward.
//
// The readable reference is `composite_reference` in composite.py (pure PyTorch, autograd); this file is
// its fast twin and tests compare the two, forward and gradients. Plain C ABI (called through ctypes), so
// it builds in a second with the system compiler and needs no torch headers.
//
// Conventions (as the reference):
//   pixel (row y, column x) has its centre at (x + 0.5, y + 0.5) (COLMAP / gsplat);
//   Gaussian i covers a pixel with alpha = min(0.99, opacity_i * exp(power)),
//     power = -0.5 * (a dx^2 + c dy^2) - b dx dy,  (dx, dy) = centre - mean2d_i,  conic_i = (a, b, c);
//   alpha < 1/255 (or power > 0) skips the Gaussian for that pixel; front to back, a pixel stops before the
//   Gaussian that would bring its transmittance to 1e-4 or below (3DGS and gsplat);
//   out = sum_i alpha_i T_i f_i + T_final * background, T_i = prod_{j<i} (1 - alpha_j).
// Loops run Gaussian-major inside a tile: each Gaussian visits only the pixels of its screen extent
// (extent_i = half-width, half-height in pixels, outside which alpha < 1/255), so small splats cost
// their own area and not the tile's.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#include <algorithm>
#include <atomic>
#include <thread>

namespace {

constexpr int kMaxChannels = 8;
constexpr float kAlphaMin = 1.0f / 255.0f;
constexpr float kAlphaMax = 0.99f;
constexpr float kTransmittanceMin = 1e-4f;

struct Tiling {
    int width, height, tile, tiles_x, tiles_y;
    Tiling(int w, int h, int t) : width(w), height(h), tile(t), tiles_x((w + t - 1) / t), tiles_y((h + t - 1) / t) {}
};

// Pixel rectangle [x0, x1) x [y0, y1) of Gaussian g inside tile (tx, ty); empty when x0 >= x1 or y0 >= y1.
inline void pixel_rect(const Tiling& tl, int tx, int ty, float mx, float my, float ex, float ey,
                       int& x0, int& x1, int& y0, int& y1) {
    const int tx0 = tx * tl.tile, ty0 = ty * tl.tile;
    const int tx1 = std::min(tx0 + tl.tile, tl.width), ty1 = std::min(ty0 + tl.tile, tl.height);
    // pixel centres c = x + 0.5 with |c - m| <= e  <=>  m - e - 0.5 <= x <= m + e - 0.5
    x0 = std::max(tx0, (int)std::ceil(mx - ex - 0.5f));
    x1 = std::min(tx1, (int)std::floor(mx + ex - 0.5f) + 1);
    y0 = std::max(ty0, (int)std::ceil(my - ey - 0.5f));
    y1 = std::min(ty1, (int)std::floor(my + ey - 0.5f) + 1);
}

inline float gauss_power(const float* conic, float dx, float dy) {
    return -0.5f * (conic[0] * dx * dx + conic[2] * dy * dy) - conic[1] * dx * dy;
}

// Inclusive tile range [a0, a1] x [b0, b1] touched by the extent of a Gaussian.
inline void tile_bounds(const Tiling& tl, float mx, float my, float ex, float ey, int& a0, int& a1, int& b0, int& b1) {
    a0 = std::max(0, (int)std::floor((mx - ex) / tl.tile));
    a1 = std::min(tl.tiles_x - 1, (int)std::floor((mx + ex) / tl.tile));
    b0 = std::max(0, (int)std::floor((my - ey) / tl.tile));
    b1 = std::min(tl.tiles_y - 1, (int)std::floor((my + ey) / tl.tile));
}


// Run body(t) for t in [0, n) on `threads` std::threads taking tiles from a shared counter. Plain threads
// rather than OpenMP: torch ships its own OpenMP runtime, and two spinning runtimes on two cores fight.
template <typename F>
void parallel_for(int n, int threads, F body) {
    std::atomic<int> next{0};
    auto worker = [&]() {
        for (int t = next++; t < n; t = next++) body(t);
    };
    threads = std::max(1, std::min(threads, n));
    std::vector<std::thread> pool;
    for (int i = 1; i < threads; ++i) pool.emplace_back(worker);
    worker();
    for (auto& th : pool) th.join();
}

}  // namespace

extern "C" {

// Bin Gaussians into tiles. order: (N,) Gaussian indices sorted front to back; extents as above. Writes
// offsets (T + 1,) and, when `capacity` suffices, ids (M,) grouped by tile and front to back within a tile.
// Returns M, the number of (tile, Gaussian) entries; the caller retries with room for M when it is larger.
int64_t bin_gaussians(int width, int height, int tile, int n, const int64_t* order, const float* means2d,
                      const float* extents, int64_t* offsets /* T + 1 */, int32_t* ids /* capacity */,
                      int64_t capacity) {
    const Tiling tl(width, height, tile);
    const int n_tiles = tl.tiles_x * tl.tiles_y;
    std::vector<int64_t> counts(n_tiles, 0);
    for (int k = 0; k < n; ++k) {
        const int64_t g = order[k];
        int a0, a1, b0, b1;
        tile_bounds(tl, means2d[2 * g], means2d[2 * g + 1], extents[2 * g], extents[2 * g + 1], a0, a1, b0, b1);
        for (int ty = b0; ty <= b1; ++ty)
            for (int tx = a0; tx <= a1; ++tx) counts[ty * tl.tiles_x + tx]++;
    }
    offsets[0] = 0;
    for (int t = 0; t < n_tiles; ++t) offsets[t + 1] = offsets[t] + counts[t];
    const int64_t total = offsets[n_tiles];
    if (total > capacity) return total;  // caller retries with room for `total`
    std::vector<int64_t> cursor(offsets, offsets + n_tiles);
    for (int k = 0; k < n; ++k) {
        const int64_t g = order[k];
        int a0, a1, b0, b1;
        tile_bounds(tl, means2d[2 * g], means2d[2 * g + 1], extents[2 * g], extents[2 * g + 1], a0, a1, b0, b1);
        for (int ty = b0; ty <= b1; ++ty)
            for (int tx = a0; tx <= a1; ++tx) ids[cursor[ty * tl.tiles_x + tx]++] = (int32_t)g;
    }
    return total;
}

// Forward. feats (N, C), background (C,). Writes out (H, W, C), transmittance (H, W) and, per pixel, the
// number of tile-list entries up to and including its last contributor (H, W).
void composite_forward(int threads, int width, int height, int tile, int channels, const float* means2d, const float* conics,
                       const float* opacities, const float* feats, const float* extents, const float* background,
                       const int64_t* offsets, const int32_t* ids, float* out, float* transmittance,
                       int32_t* last) {
    const Tiling tl(width, height, tile);
    const int n_tiles = tl.tiles_x * tl.tiles_y;
    const int C = channels;
    parallel_for(n_tiles, threads, [&](int t) {
        const int tx = t % tl.tiles_x, ty = t / tl.tiles_x;
        const int px0 = tx * tile, py0 = ty * tile;
        const int tw = std::min(tile, width - px0), th = std::min(tile, height - py0);
        const int npix = tw * th;
        std::vector<float> T(npix, 1.0f), acc((size_t)npix * C, 0.0f);
        std::vector<int32_t> lst(npix, 0);
        std::vector<uint8_t> done(npix, 0);
        int n_done = 0;
        for (int64_t k = offsets[t]; k < offsets[t + 1] && n_done < npix; ++k) {
            const int g = ids[k];
            const float mx = means2d[2 * g], my = means2d[2 * g + 1];
            int x0, x1, y0, y1;
            pixel_rect(tl, tx, ty, mx, my, extents[2 * g], extents[2 * g + 1], x0, x1, y0, y1);
            const float* conic = conics + 3 * g;
            const float op = opacities[g];
            const float* f = feats + (size_t)g * C;
            const int32_t pos = (int32_t)(k - offsets[t] + 1);
            for (int y = y0; y < y1; ++y) {
                const float dy = (float)y + 0.5f - my;
                for (int x = x0; x < x1; ++x) {
                    const int p = (y - py0) * tw + (x - px0);
                    if (done[p]) continue;
                    const float power = gauss_power(conic, (float)x + 0.5f - mx, dy);
                    if (power > 0.0f) continue;
                    const float alpha = std::min(kAlphaMax, op * std::exp(power));
                    if (alpha < kAlphaMin) continue;
                    const float next_T = T[p] * (1.0f - alpha);
                    if (next_T <= kTransmittanceMin) { done[p] = 1; ++n_done; continue; }
                    const float w = alpha * T[p];
                    for (int c = 0; c < C; ++c) acc[(size_t)p * C + c] += w * f[c];
                    T[p] = next_T;
                    lst[p] = pos;
                }
            }
        }
        for (int yy = 0; yy < th; ++yy)
            for (int xx = 0; xx < tw; ++xx) {
                const int p = yy * tw + xx;
                const size_t pix = (size_t)(py0 + yy) * width + (px0 + xx);
                for (int c = 0; c < C; ++c) out[pix * C + c] = acc[(size_t)p * C + c] + T[p] * background[c];
                transmittance[pix] = T[p];
                last[pix] = lst[p];
            }
    });
}

// Backward of composite_forward for grad_out (H, W, C) and grad_alpha (H, W) (alpha = 1 - T_final).
// Per-entry gradients land in a buffer indexed by tile-list position (no races, any thread count), then
// are summed per Gaussian in list order, so results do not depend on scheduling.
// Outputs (zeroed by the caller): g_means2d (N, 2), g_conics (N, 3), g_opacities (N,), g_feats (N, C).
void composite_backward(int threads, int width, int height, int tile, int channels, const float* means2d, const float* conics,
                        const float* opacities, const float* feats, const float* extents, const float* background,
                        const int64_t* offsets, const int32_t* ids, const float* transmittance, const int32_t* last,
                        const float* grad_out, const float* grad_alpha, float* g_means2d, float* g_conics,
                        float* g_opacities, float* g_feats) {
    const Tiling tl(width, height, tile);
    const int n_tiles = tl.tiles_x * tl.tiles_y;
    const int C = channels;
    const int K = 6 + C;  // per entry: mean x, mean y, conic a, b, c, opacity, feats
    const int64_t M = offsets[n_tiles];
    std::vector<float> entry((size_t)M * K, 0.0f);
    parallel_for(n_tiles, threads, [&](int t) {
        const int tx = t % tl.tiles_x, ty = t / tl.tiles_x;
        const int px0 = tx * tile, py0 = ty * tile;
        const int tw = std::min(tile, width - px0), th = std::min(tile, height - py0);
        const int npix = tw * th;
        std::vector<float> T(npix), S((size_t)npix * C), gout((size_t)npix * C), gal(npix), Tf(npix);
        std::vector<int32_t> lst(npix);
        int32_t max_last = 0;
        for (int yy = 0; yy < th; ++yy)
            for (int xx = 0; xx < tw; ++xx) {
                const int p = yy * tw + xx;
                const size_t pix = (size_t)(py0 + yy) * width + (px0 + xx);
                T[p] = Tf[p] = transmittance[pix];
                lst[p] = last[pix];
                max_last = std::max(max_last, lst[p]);
                gal[p] = grad_alpha ? grad_alpha[pix] : 0.0f;
                for (int c = 0; c < C; ++c) {
                    S[(size_t)p * C + c] = T[p] * background[c];  // what lies behind: background so far
                    gout[(size_t)p * C + c] = grad_out[pix * C + c];
                }
            }
        for (int64_t k = offsets[t] + max_last - 1; k >= offsets[t]; --k) {
            const int g = ids[k];
            const float mx = means2d[2 * g], my = means2d[2 * g + 1];
            int x0, x1, y0, y1;
            pixel_rect(tl, tx, ty, mx, my, extents[2 * g], extents[2 * g + 1], x0, x1, y0, y1);
            const float* conic = conics + 3 * g;
            const float op = opacities[g];
            const float* f = feats + (size_t)g * C;
            const int32_t pos = (int32_t)(k - offsets[t] + 1);
            float gmx = 0, gmy = 0, ga = 0, gb = 0, gc = 0, gop = 0;
            float gf[kMaxChannels] = {0};
            for (int y = y0; y < y1; ++y) {
                const float dy = (float)y + 0.5f - my;
                for (int x = x0; x < x1; ++x) {
                    const int p = (y - py0) * tw + (x - px0);
                    if (pos > lst[p]) continue;
                    const float dx = (float)x + 0.5f - mx;
                    const float power = gauss_power(conic, dx, dy);
                    if (power > 0.0f) continue;
                    const float G = std::exp(power);
                    const float raw = op * G;
                    const float alpha = std::min(kAlphaMax, raw);
                    if (alpha < kAlphaMin) continue;
                    const float one_minus = 1.0f - alpha;
                    const float Ti = T[p] / one_minus;
                    const float w = alpha * Ti;
                    float dalpha = gal[p] * Tf[p] / one_minus;
                    for (int c = 0; c < C; ++c) {
                        const size_t pc = (size_t)p * C + c;
                        gf[c] += w * gout[pc];
                        dalpha += gout[pc] * (Ti * f[c] - S[pc] / one_minus);
                        S[pc] += w * f[c];
                    }
                    T[p] = Ti;
                    if (raw > kAlphaMax) continue;  // clamped: no gradient to opacity or shape
                    gop += G * dalpha;
                    const float dpower = op * G * dalpha;
                    ga += -0.5f * dx * dx * dpower;
                    gb += -dx * dy * dpower;
                    gc += -0.5f * dy * dy * dpower;
                    gmx += (conic[0] * dx + conic[1] * dy) * dpower;
                    gmy += (conic[1] * dx + conic[2] * dy) * dpower;
                }
            }
            float* e = entry.data() + (size_t)k * K;
            e[0] = gmx; e[1] = gmy; e[2] = ga; e[3] = gb; e[4] = gc; e[5] = gop;
            for (int c = 0; c < C; ++c) e[6 + c] = gf[c];
        }
    });
    for (int64_t k = 0; k < M; ++k) {
        const int g = ids[k];
        const float* e = entry.data() + (size_t)k * K;
        g_means2d[2 * g] += e[0]; g_means2d[2 * g + 1] += e[1];
        g_conics[3 * g] += e[2]; g_conics[3 * g + 1] += e[3]; g_conics[3 * g + 2] += e[4];
        g_opacities[g] += e[5];
        for (int c = 0; c < C; ++c) g_feats[(size_t)g * C + c] += e[6 + c];
    }
}

}  // extern "C"
