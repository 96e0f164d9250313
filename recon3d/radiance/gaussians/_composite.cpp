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

#include "../_parallel.h"
#include <algorithm>

namespace {

using recon3d::parallel_chunks;
using recon3d::parallel_for;

constexpr int kMaxChannels = 8;
constexpr int kTile = 16;  // tile side in pixels (composite.py's TILE)
constexpr int kPrefetch = 8;  // tile-list entries ahead to prefetch
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

// exp(x) for x <= 0 without a library call, so the loops over a row's pixels vectorise: 2^(x log2 e) split
// into an integer power (written into the exponent bits) and 2^f, f in [0, 1), by a degree-5 polynomial
// fitted for relative error (1.7e-7, about float32 rounding). The reference uses torch.exp; tests compare.
inline float exp_nonpositive(float x) {
    const float t = std::max(x, -80.0f) * 1.44269504f;
    const float n = std::floor(t);
    const float f = t - n;
    float p = 0.00187537657f;
    p = p * f + 0.00898725919f;
    p = p * f + 0.0558359654f;
    p = p * f + 0.240146495f;
    p = p * f + 0.693154738f;
    p = p * f + 0.999999834f;
    return p * __builtin_bit_cast(float, ((int32_t)n + 127) << 23);
}

// A Gaussian's screen-space data in one cache line, packed once per call: the tile loops visit Gaussians in
// depth order, i.e. at random places in memory, and five separate arrays cost five cache misses each.
struct alignas(64) Packed {
    float mx, my, a, b, c, op, ex, ey;
    float f[kMaxChannels];
};

std::vector<Packed> pack(int n, int C, const float* means2d, const float* conics, const float* opacities,
                         const float* feats, const float* extents, int threads);

// One tile-list entry: a Gaussian and the pixel rectangle [x0, x1) x [y0, y1) it may touch in this tile.
struct Splat {
    int x0, x1, y0, y1;
    float mx, my, a, b, c, op;
    const float* f;
};

inline Splat load_splat(const Tiling& tl, int tx, int ty, const Packed& q) {
    Splat s;
    s.mx = q.mx;
    s.my = q.my;
    s.a = q.a;
    s.b = q.b;
    s.c = q.c;
    s.op = q.op;
    s.f = q.f;
    pixel_rect(tl, tx, ty, q.mx, q.my, q.ex, q.ey, s.x0, s.x1, s.y0, s.y1);
    return s;
}

// For the kTile pixels of tile row y starting at column px0: G = exp(power) and alpha = min(0.99, opacity G),
// alpha = 0 where the power is positive (numerically impossible inside a valid conic). A fixed trip count
// and no branches, so it compiles to a couple of vector instructions whatever the splat's width.
inline void row_alphas(const Splat& s, int y, int px0, float* G, float* alpha) {
    const float dy = (float)y + 0.5f - s.my;
    const float cy = s.c * dy * dy, by = s.b * dy;
    for (int i = 0; i < kTile; ++i) {
        const float dx = (float)(px0 + i) + 0.5f - s.mx;
        const float power = -0.5f * (s.a * dx * dx + cy) - by * dx;
        const float e = exp_nonpositive(power);
        G[i] = e;
        alpha[i] = power > 0.0f ? 0.0f : std::min(kAlphaMax, s.op * e);
    }
}

// Bits x0 - px0 .. x1 - px0 - 1 set: the columns of a row of the tile that a rectangle covers.
inline uint64_t row_bits(int x0, int x1, int px0) {
    const int lo = x0 - px0, n = x1 - x0;
    return (n >= 64 ? ~0ull : ((1ull << n) - 1)) << lo;
}

// Inclusive tile range [a0, a1] x [b0, b1] touched by the extent of a Gaussian.
inline void tile_bounds(const Tiling& tl, float mx, float my, float ex, float ey, int& a0, int& a1, int& b0, int& b1) {
    a0 = std::max(0, (int)std::floor((mx - ex) / tl.tile));
    a1 = std::min(tl.tiles_x - 1, (int)std::floor((mx + ex) / tl.tile));
    b0 = std::max(0, (int)std::floor((my - ey) / tl.tile));
    b1 = std::min(tl.tiles_y - 1, (int)std::floor((my + ey) / tl.tile));
}


std::vector<Packed> pack(int n, int C, const float* means2d, const float* conics, const float* opacities,
                         const float* feats, const float* extents, int threads) {
    std::vector<Packed> out(n);
    const int chunk = 4096;
    parallel_for((n + chunk - 1) / chunk, threads, [&](int b) {
        for (int g = b * chunk; g < std::min(n, (b + 1) * chunk); ++g) {
            Packed& q = out[g];
            q.mx = means2d[2 * g];
            q.my = means2d[2 * g + 1];
            q.a = conics[3 * g];
            q.b = conics[3 * g + 1];
            q.c = conics[3 * g + 2];
            q.op = opacities[g];
            q.ex = extents[2 * g];
            q.ey = extents[2 * g + 1];
            for (int c = 0; c < C; ++c) q.f[c] = feats[(size_t)g * C + c];
        }
    });
    return out;
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
    // tile rectangles in index order (sequential reads), then one 8-byte gather per Gaussian in depth order
    struct Rect { int16_t a0, a1, b0, b1; };
    std::vector<Rect> by_index(n), rects(n);
    for (int g = 0; g < n; ++g) {
        int a0, a1, b0, b1;
        tile_bounds(tl, means2d[2 * g], means2d[2 * g + 1], extents[2 * g], extents[2 * g + 1], a0, a1, b0, b1);
        by_index[g] = {(int16_t)a0, (int16_t)a1, (int16_t)b0, (int16_t)b1};
    }
    for (int k = 0; k < n; ++k) rects[k] = by_index[order[k]];
    std::vector<int64_t> counts(n_tiles, 0);
    for (const Rect& r : rects)
        for (int ty = r.b0; ty <= r.b1; ++ty)
            for (int tx = r.a0; tx <= r.a1; ++tx) counts[ty * tl.tiles_x + tx]++;
    offsets[0] = 0;
    for (int t = 0; t < n_tiles; ++t) offsets[t + 1] = offsets[t] + counts[t];
    const int64_t total = offsets[n_tiles];
    if (total > capacity) return total;  // caller retries with room for `total`
    std::vector<int64_t> cursor(offsets, offsets + n_tiles);
    for (int k = 0; k < n; ++k) {
        const Rect& r = rects[k];
        for (int ty = r.b0; ty <= r.b1; ++ty)
            for (int tx = r.a0; tx <= r.a1; ++tx) ids[cursor[ty * tl.tiles_x + tx]++] = (int32_t)order[k];
    }
    return total;
}

// Forward. feats (N, C), background (C,). Writes out (H, W, C), transmittance (H, W) and, per pixel, the
// number of tile-list entries up to and including its last contributor (H, W).
void composite_forward(int threads, int n, int width, int height, int channels, const float* means2d, const float* conics,
                       const float* opacities, const float* feats, const float* extents, const float* background,
                       const int64_t* offsets, const int32_t* ids, float* out, float* transmittance,
                       int32_t* last) {
    const int tile = kTile;  // the row buffers are kTile wide; binning used the same (composite.py's TILE)
    const Tiling tl(width, height, tile);
    const int n_tiles = tl.tiles_x * tl.tiles_y;
    const int C = channels;
    const std::vector<Packed> packed = pack(n, C, means2d, conics, opacities, feats, extents, threads);
    parallel_for(n_tiles, threads, [&](int t) {
        const int tx = t % tl.tiles_x, ty = t / tl.tiles_x;
        const int px0 = tx * tile, py0 = ty * tile;
        const int tw = std::min(tile, width - px0), th = std::min(tile, height - py0);
        const int npix = tw * th;
        std::vector<float> T(npix, 1.0f), acc((size_t)npix * C, 0.0f);
        std::vector<int32_t> lst(npix, 0);
        uint64_t done[kTile] = {0};  // per tile row: bit x set once pixel x has stopped
        int n_done = 0;
        float G[kTile], alpha[kTile];
        for (int64_t k = offsets[t]; k < offsets[t + 1] && n_done < npix; ++k) {
            if (k + kPrefetch < offsets[t + 1]) __builtin_prefetch(&packed[ids[k + kPrefetch]]);
            const Splat s = load_splat(tl, tx, ty, packed[ids[k]]);
            if (s.x0 >= s.x1) continue;
            const int32_t pos = (int32_t)(k - offsets[t] + 1);
            const uint64_t bits = row_bits(s.x0, s.x1, px0);
            for (int y = s.y0; y < s.y1; ++y) {
                uint64_t& row_done = done[y - py0];
                if ((row_done & bits) == bits) continue;  // every pixel of this row has stopped
                row_alphas(s, y, px0, G, alpha);
                for (int x = s.x0; x < s.x1; ++x) {
                    const float al = alpha[x - px0];
                    const int p = (y - py0) * tw + (x - px0);
                    if (al < kAlphaMin || (row_done >> (x - px0) & 1)) continue;
                    const float next_T = T[p] * (1.0f - al);
                    if (next_T <= kTransmittanceMin) { row_done |= 1ull << (x - px0); ++n_done; continue; }
                    const float w = al * T[p];
                    for (int c = 0; c < C; ++c) acc[(size_t)p * C + c] += w * s.f[c];
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
void composite_backward(int threads, int n, int width, int height, int channels, const float* means2d, const float* conics,
                        const float* opacities, const float* feats, const float* extents, const float* background,
                        const int64_t* offsets, const int32_t* ids, const float* transmittance, const int32_t* last,
                        const float* grad_out, const float* grad_alpha, float* g_means2d, float* g_conics,
                        float* g_opacities, float* g_feats) {
    const int tile = kTile;
    const Tiling tl(width, height, tile);
    const int n_tiles = tl.tiles_x * tl.tiles_y;
    const int C = channels;
    const int K = 6 + C;  // per entry: mean x, mean y, conic a, b, c, opacity, feats
    const int64_t M = offsets[n_tiles];
    std::vector<float> entry((size_t)M * K, 0.0f);
    const std::vector<Packed> packed = pack(n, C, means2d, conics, opacities, feats, extents, threads);
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
        // going back to front, pixel p takes part from entry lst[p] on: activate pixels in that order
        std::vector<int> by_last(npix);
        for (int p = 0; p < npix; ++p) by_last[p] = p;
        std::sort(by_last.begin(), by_last.end(), [&](int a, int b) { return lst[a] > lst[b]; });
        uint64_t active[kTile] = {0};
        int n_active = 0;
        float Gs[kTile], alphas[kTile];
        for (int64_t k = offsets[t] + max_last - 1; k >= offsets[t]; --k) {
            const int32_t pos = (int32_t)(k - offsets[t] + 1);
            for (; n_active < npix && lst[by_last[n_active]] >= pos; ++n_active)
                active[by_last[n_active] / tw] |= 1ull << (by_last[n_active] % tw);
            if (k - kPrefetch >= offsets[t]) __builtin_prefetch(&packed[ids[k - kPrefetch]]);
            const Splat s = load_splat(tl, tx, ty, packed[ids[k]]);
            if (s.x0 >= s.x1) continue;
            const uint64_t bits = row_bits(s.x0, s.x1, px0);
            float gmx = 0, gmy = 0, ga = 0, gb = 0, gc = 0, gop = 0;
            float gf[kMaxChannels] = {0};
            for (int y = s.y0; y < s.y1; ++y) {
                if ((active[y - py0] & bits) == 0) continue;  // no pixel of this row reaches this far back
                row_alphas(s, y, px0, Gs, alphas);
                const float dy = (float)y + 0.5f - s.my;
                for (int x = s.x0; x < s.x1; ++x) {
                    const float alpha = alphas[x - px0];
                    const int p = (y - py0) * tw + (x - px0);
                    if (alpha < kAlphaMin || pos > lst[p]) continue;
                    const float G = Gs[x - px0];
                    const float dx = (float)x + 0.5f - s.mx;
                    const float one_minus = 1.0f - alpha;
                    const float Ti = T[p] / one_minus;
                    const float w = alpha * Ti;
                    float dalpha = gal[p] * Tf[p] / one_minus;
                    for (int c = 0; c < C; ++c) {
                        const size_t pc = (size_t)p * C + c;
                        gf[c] += w * gout[pc];
                        dalpha += gout[pc] * (Ti * s.f[c] - S[pc] / one_minus);
                        S[pc] += w * s.f[c];
                    }
                    T[p] = Ti;
                    if (s.op * G > kAlphaMax) continue;  // clamped: no gradient to opacity or shape
                    gop += G * dalpha;
                    const float dpower = s.op * G * dalpha;
                    ga += -0.5f * dx * dx * dpower;
                    gb += -dx * dy * dpower;
                    gc += -0.5f * dy * dy * dpower;
                    gmx += (s.a * dx + s.b * dy) * dpower;
                    gmy += (s.b * dx + s.c * dy) * dpower;
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
