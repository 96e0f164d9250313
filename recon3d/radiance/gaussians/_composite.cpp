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
// Loops run Gaussian-major inside a tile: each Gaussian visits only the tile rows of its screen extent
// (extent_i = half-width, half-height in pixels, outside which alpha < 1/255), each row's 16 pixels at once
// as one vector masked to the extent's columns, so small splats cost their own rows and not the tile's.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
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
inline uint32_t row_bits(int x0, int x1, int px0) {
    const int lo = x0 - px0, n = x1 - x0;
    return (uint32_t)(((1ull << n) - 1) << lo);  // n <= kTile
}

// One tile row of kTile pixels as a vector (GCC / Clang vector extensions: AVX-512, AVX2 or SSE as the
// machine has), for branch-free row updates; masks are integer vectors (-1 true, 0 false). Where a pixel
// takes part is data (alpha, transmittance), which per-pixel branches had to guess.
typedef float VF __attribute__((vector_size(kTile * sizeof(float))));
typedef int32_t VI __attribute__((vector_size(kTile * sizeof(int32_t))));
constexpr VF kLanes = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
constexpr VI kLaneIds = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
static_assert(kTile == 16, "the lane constants above are one tile row");
inline VF load(const float* p) { VF v; std::memcpy(&v, p, sizeof v); return v; }
inline VI load(const int32_t* p) { VI v; std::memcpy(&v, p, sizeof v); return v; }
inline void store(float* p, VF v) { std::memcpy(p, &v, sizeof v); }
inline void store(int32_t* p, VI v) { std::memcpy(p, &v, sizeof v); }
inline float sum(VF v) {
    float s = 0.0f;
    for (int i = 0; i < kTile; ++i) s += v[i];
    return s;
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

// body(std::integral_constant<int, C>) for the run-time channel count 1..kMaxChannels.
template <typename F>
void with_channels(int channels, F body) {
    switch (channels) {
        case 1: body(std::integral_constant<int, 1>{}); break;
        case 2: body(std::integral_constant<int, 2>{}); break;
        case 3: body(std::integral_constant<int, 3>{}); break;
        case 4: body(std::integral_constant<int, 4>{}); break;
        case 5: body(std::integral_constant<int, 5>{}); break;
        case 6: body(std::integral_constant<int, 6>{}); break;
        case 7: body(std::integral_constant<int, 7>{}); break;
        default: body(std::integral_constant<int, kMaxChannels>{}); break;  // composite.py checks C <= 8
    }
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
    with_channels(channels, [&](auto channel_count) {
        constexpr int C = decltype(channel_count)::value;  // known at compile time: the pixel loops vectorise
        const std::vector<Packed> packed = pack(n, C, means2d, conics, opacities, feats, extents, threads);
        parallel_for(n_tiles, threads, [&](int t) {
            const int tx = t % tl.tiles_x, ty = t / tl.tiles_x;
            const int px0 = tx * tile, py0 = ty * tile;
            const int tw = std::min(tile, width - px0), th = std::min(tile, height - py0);
            // per tile pixel (row-major, kTile wide whatever the tile's width): transmittance, colour channels
            // (one plane each), last contributor; a row's lanes are updated together, without branches
            alignas(64) float T[kTile * kTile], acc[C][kTile * kTile];
            alignas(64) int32_t lst[kTile * kTile];
            std::fill(T, T + kTile * kTile, 1.0f);
            for (int c = 0; c < C; ++c) std::fill(acc[c], acc[c] + kTile * kTile, 0.0f);
            std::fill(lst, lst + kTile * kTile, 0);
            uint32_t done[kTile] = {0};  // per tile row: bit x set once pixel x has stopped
            int n_done = 0;
            const int npix = tw * th;
            alignas(64) float G[kTile], alpha[kTile];
            for (int64_t k = offsets[t]; k < offsets[t + 1] && n_done < npix; ++k) {
                if (k + kPrefetch < offsets[t + 1]) __builtin_prefetch(&packed[ids[k + kPrefetch]]);
                const Splat s = load_splat(tl, tx, ty, packed[ids[k]]);
                if (s.x0 >= s.x1) continue;
                const int32_t pos = (int32_t)(k - offsets[t] + 1);
                const uint32_t bits = row_bits(s.x0, s.x1, px0);
                for (int y = s.y0; y < s.y1; ++y) {
                    const int r = y - py0;
                    const uint32_t live = bits & ~done[r];
                    if (!live) continue;  // every pixel of this row has stopped
                    row_alphas(s, y, px0, G, alpha);
                    const int p = r * kTile;
                    const VF al = load(alpha), Tp = load(T + p), next_T = Tp * (1.0f - al);
                    const VI use = (((VI{} + (int32_t)live) >> kLaneIds & 1) != 0) & (al >= kAlphaMin);
                    const VI stops = use & (next_T <= kTransmittanceMin);
                    const VI upd = use & ~stops;
                    const VF w = upd ? al * Tp : 0.0f;
                    for (int c = 0; c < C; ++c) store(acc[c] + p, load(acc[c] + p) + w * s.f[c]);
                    store(T + p, upd ? next_T : Tp);
                    store(lst + p, upd ? pos : load(lst + p));
                    const VI stop_bits = stops & (1 << kLaneIds);
                    uint32_t stopped = 0;
                    for (int i = 0; i < kTile; ++i) stopped |= (uint32_t)stop_bits[i];
                    done[r] |= stopped;
                    n_done += __builtin_popcount(stopped);
                }
            }
            for (int yy = 0; yy < th; ++yy)
                for (int xx = 0; xx < tw; ++xx) {
                    const int p = yy * kTile + xx;
                    const size_t pix = (size_t)(py0 + yy) * width + (px0 + xx);
                    for (int c = 0; c < C; ++c) out[pix * C + c] = acc[c][p] + T[p] * background[c];
                    transmittance[pix] = T[p];
                    last[pix] = lst[p];
                }
        });
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
    with_channels(channels, [&](auto channel_count) {
        constexpr int C = decltype(channel_count)::value;  // known at compile time: the pixel loops vectorise
        const int K = 6 + C;  // per entry: mean x, mean y, conic a, b, c, opacity, feats
        const int64_t M = offsets[n_tiles];
        std::vector<float> entry((size_t)M * K, 0.0f);
        const std::vector<Packed> packed = pack(n, C, means2d, conics, opacities, feats, extents, threads);
        parallel_for(n_tiles, threads, [&](int t) {
            const int tx = t % tl.tiles_x, ty = t / tl.tiles_x;
            const int px0 = tx * tile, py0 = ty * tile;
            const int tw = std::min(tile, width - px0), th = std::min(tile, height - py0);
            const int npix = tw * th;
            // per tile pixel, kTile wide as in the forward (lanes outside the image stay inert): transmittance
            // going back, final transmittance, gradients in, what lies behind (one plane per channel), last entry
            constexpr int kPix = kTile * kTile;
            alignas(64) float T[kPix], Tf[kPix], gal[kPix], S[C][kPix], gout[C][kPix];
            alignas(64) int32_t lst[kPix];
            std::fill(T, T + kPix, 1.0f);
            std::fill(Tf, Tf + kPix, 1.0f);
            std::fill(gal, gal + kPix, 0.0f);
            std::fill(lst, lst + kPix, 0);
            for (int c = 0; c < C; ++c) {
                std::fill(S[c], S[c] + kPix, 0.0f);
                std::fill(gout[c], gout[c] + kPix, 0.0f);
            }
            int32_t max_last = 0;
            std::vector<int> by_last;  // tile pixels, to activate in the order they join going back to front
            by_last.reserve(npix);
            for (int yy = 0; yy < th; ++yy)
                for (int xx = 0; xx < tw; ++xx) {
                    const int p = yy * kTile + xx;
                    const size_t pix = (size_t)(py0 + yy) * width + (px0 + xx);
                    T[p] = Tf[p] = transmittance[pix];
                    lst[p] = last[pix];
                    max_last = std::max(max_last, lst[p]);
                    gal[p] = grad_alpha ? grad_alpha[pix] : 0.0f;
                    for (int c = 0; c < C; ++c) {
                        S[c][p] = T[p] * background[c];  // what lies behind: background so far
                        gout[c][p] = grad_out[pix * C + c];
                    }
                    by_last.push_back(p);
                }
            // going back to front, pixel p takes part from entry lst[p] on
            std::sort(by_last.begin(), by_last.end(), [&](int a, int b) { return lst[a] > lst[b]; });
            uint32_t active[kTile] = {0};
            int n_active = 0;
            alignas(64) float Gs[kTile], alphas[kTile];
            for (int64_t k = offsets[t] + max_last - 1; k >= offsets[t]; --k) {
                const int32_t pos = (int32_t)(k - offsets[t] + 1);
                for (; n_active < npix && lst[by_last[n_active]] >= pos; ++n_active)
                    active[by_last[n_active] / kTile] |= 1u << (by_last[n_active] % kTile);
                if (k - kPrefetch >= offsets[t]) __builtin_prefetch(&packed[ids[k - kPrefetch]]);
                const Splat s = load_splat(tl, tx, ty, packed[ids[k]]);
                if (s.x0 >= s.x1) continue;
                const uint32_t bits = row_bits(s.x0, s.x1, px0);
                // per-lane sums over the splat's rows, reduced once after them: d mean x, y, conic a, b, c,
                // opacity, then the channels
                VF s_mx = {}, s_my = {}, s_a = {}, s_b = {}, s_c = {}, s_op = {}, s_f[C] = {};
                const VF dx = kLanes + ((float)px0 + 0.5f - s.mx);
                for (int y = s.y0; y < s.y1; ++y) {
                    const int r = y - py0;
                    const uint32_t live = active[r] & bits;
                    if (!live) continue;  // no pixel of this row reaches this far back
                    row_alphas(s, y, px0, Gs, alphas);
                    const float dy = (float)y + 0.5f - s.my;
                    const int p = r * kTile;
                    const VF alpha = load(alphas), G = load(Gs), Tp = load(T + p);
                    const VI use = (((VI{} + (int32_t)live) >> kLaneIds & 1) != 0) & (alpha >= kAlphaMin) &
                                   (load(lst + p) >= pos);
                    const VF inv = 1.0f / (1.0f - alpha);
                    const VF Ti = Tp * inv;
                    const VF w = use ? alpha * Ti : 0.0f;
                    VF dalpha = load(gal + p) * load(Tf + p) * inv;
                    for (int c = 0; c < C; ++c) {
                        const VF go = load(gout[c] + p), Sc = load(S[c] + p);
                        s_f[c] += w * go;
                        dalpha += go * (Ti * s.f[c] - Sc * inv);
                        store(S[c] + p, Sc + w * s.f[c]);
                    }
                    store(T + p, use ? Ti : Tp);
                    const VI shaped = use & (s.op * G <= kAlphaMax);  // clamped: no gradient to opacity or shape
                    const VF dpower = shaped ? s.op * G * dalpha : 0.0f;
                    s_mx += (s.a * dx + s.b * dy) * dpower;
                    s_my += (s.b * dx + s.c * dy) * dpower;
                    s_a += -0.5f * dx * dx * dpower;
                    s_b += -dy * dx * dpower;
                    s_c += (-0.5f * dy * dy) * dpower;
                    s_op += shaped ? G * dalpha : 0.0f;
                }
                float* e = entry.data() + (size_t)k * K;
                e[0] = sum(s_mx); e[1] = sum(s_my); e[2] = sum(s_a); e[3] = sum(s_b); e[4] = sum(s_c);
                e[5] = sum(s_op);
                for (int c = 0; c < C; ++c) e[6 + c] = sum(s_f[c]);
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
    });
}

}  // extern "C"
