"""The textured world: parallelograms with textures, ray casting against them and sampling points on them.

World frame: z up, the ground is the plane z = 0, the objects stand near the origin inside
`OBJECTS_BOUNDS`, and `SCENE_CENTER` is where the rigs look. Units are metres by convention.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SCENE_CENTER = np.array([0.0, 0.0, 0.5])
# axis-aligned box (min, max) holding every object of `make_world` (not the ground or the backdrop)
OBJECTS_BOUNDS = (np.array([-1.9, -1.9, 0.0]), np.array([1.9, 1.9, 1.25]))
PX_PER_UNIT = 96  # texture resolution of the world's surfaces, texels per world unit


@dataclass(frozen=True)
class TexturedQuad:
    """The parallelogram `origin + s * axis_u + t * axis_v`, s, t in [0, 1], with a texture on it.

    Texture pixel (row, col) covers s in [col / T_w, (col + 1) / T_w] and t in [row / T_h, (row + 1) / T_h],
    so rows run along `axis_v` and columns along `axis_u`.
    """

    origin: np.ndarray  # (3,) float64, world frame
    axis_u: np.ndarray  # (3,) float64
    axis_v: np.ndarray  # (3,) float64
    texture: np.ndarray  # (T_h, T_w, 3) uint8 RGB

    @property
    def area(self) -> float:
        return float(np.linalg.norm(np.cross(self.axis_u, self.axis_v)))

    def point(self, st: np.ndarray) -> np.ndarray:
        """st: (N, 2) quad coordinates -> (N, 3) world points."""
        st = np.asarray(st, dtype=np.float64)
        return self.origin + st[:, :1] * self.axis_u + st[:, 1:2] * self.axis_v


def random_texture(size: int | tuple[int, int], seed: int) -> np.ndarray:
    """A corner-rich texture for feature detectors: shapes of many sizes and colours on mid-grey.

    size: side in texels, or (height, width). Returns (H, W, 3) uint8 RGB, lightly blurred (sigma 0.8
    texels) so that bilinear sampling is smooth.
    """
    h, w = (size, size) if np.isscalar(size) else size
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 128, np.uint8)
    n_shapes = max(20, h * w // 100)
    scale_max = max(4.0, min(min(h, w) / 4, 32.0))  # radii from 2 texels to a third of a world unit
    for _ in range(n_shapes):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        r = float(np.exp(rng.uniform(np.log(2.0), np.log(scale_max))))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        kind = rng.integers(4)
        if kind == 0:
            cv2.circle(img, (int(cx), int(cy)), max(1, int(r)), colour, -1, cv2.LINE_AA)
        elif kind == 1:
            p1 = (int(cx - r), int(cy - r * rng.uniform(0.3, 1.0)))
            p2 = (int(cx + r), int(cy + r * rng.uniform(0.3, 1.0)))
            cv2.rectangle(img, p1, p2, colour, -1, cv2.LINE_AA)
        elif kind == 2:
            angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(3, 7)))
            radii = r * rng.uniform(0.4, 1.0, len(angles))
            pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], -1)
            cv2.fillPoly(img, [pts.astype(np.int32)], colour, cv2.LINE_AA)
        else:
            a = rng.uniform(0, np.pi)
            d = np.array([np.cos(a), np.sin(a)]) * r * 2
            p1, p2 = (int(cx - d[0]), int(cy - d[1])), (int(cx + d[0]), int(cy + d[1]))
            cv2.line(img, p1, p2, colour, int(rng.integers(1, 4)), cv2.LINE_AA)
    return cv2.GaussianBlur(img, (0, 0), 0.8)


def _quad(origin, axis_u, axis_v, seed: int) -> TexturedQuad:
    origin, axis_u, axis_v = (np.asarray(a, dtype=np.float64) for a in (origin, axis_u, axis_v))
    rows, cols = (max(16, round(float(np.linalg.norm(a)) * PX_PER_UNIT)) for a in (axis_v, axis_u))
    return TexturedQuad(origin, axis_u, axis_v, random_texture((rows, cols), seed))


def box_faces(center_xy: np.ndarray, size: np.ndarray, yaw: float, seed: int) -> list[TexturedQuad]:
    """The four sides and the top of a box standing on the ground; rows of each side texture run down."""
    ex = np.array([np.cos(yaw), np.sin(yaw), 0.0]) * size[0]
    ey = np.array([-np.sin(yaw), np.cos(yaw), 0.0]) * size[1]
    ez = np.array([0.0, 0.0, size[2]])
    base = np.array([center_xy[0], center_xy[1], 0.0]) - ex / 2 - ey / 2  # a bottom corner
    corners = [base, base + ex, base + ex + ey, base + ey]  # counter-clockwise seen from above
    faces = [_quad(corners[(k + 1) % 4] + ez, corners[k] - corners[(k + 1) % 4], -ez, seed + k) for k in range(4)]
    faces.append(_quad(base + ez, ex, ey, seed + 4))
    return faces


def make_world(seed: int = 0) -> list[TexturedQuad]:
    """A textured world: a 6 x 6 ground at z = 0, two or three boxes near the origin and a backdrop wall.

    Boxes have sides of 0.5 to 1.2, random yaw, and lie inside `OBJECTS_BOUNDS`; the wall stands at y = 5
    (x in [-4, 4], z in [0, 3]), behind the scene for cameras on the -y side. Returns a list of quads.
    """
    return make_labeled_world(seed)[0]


def make_labeled_world(seed: int = 0, n_boxes: int | None = None) -> tuple[list[TexturedQuad], np.ndarray]:
    """`make_world` with the object each quad belongs to: quads and quad_object (Q,) int64, 0 for the
    ground and the wall (background), k for the faces of the k-th box (1, 2, ...). `n_boxes` (1 to 3)
    overrides the seeded count; the first boxes of a seed are the same either way."""
    rng = np.random.default_rng(seed)
    quads = [_quad((-3.0, -3.0, 0.0), (6.0, 0.0, 0.0), (0.0, 6.0, 0.0), seed * 1000 + 1)]
    objects = [0]
    placed: list[tuple[np.ndarray, float]] = []  # (centre xy, footprint radius) of each box
    seeded = int(rng.integers(2, 4))
    n_boxes = seeded if n_boxes is None else n_boxes
    if not 1 <= n_boxes <= 3:
        raise ValueError(f"make_labeled_world: n_boxes must be 1 to 3, got {n_boxes}")
    while len(placed) < n_boxes:
        size = rng.uniform(0.5, 1.2, 3)
        center = rng.uniform(-1.0, 1.0, 2)
        radius = np.linalg.norm(size[:2]) / 2
        if any(np.linalg.norm(center - c) < radius + r + 0.1 for c, r in placed):
            continue
        yaw = rng.uniform(0, np.pi / 2)
        faces = box_faces(center, size, yaw, seed * 1000 + 10 * (len(placed) + 1))
        quads += faces
        placed.append((center, radius))
        objects += [len(placed)] * len(faces)
    quads.append(_quad((-4.0, 5.0, 3.0), (8.0, 0.0, 0.0), (0.0, 0.0, -3.0), seed * 1000 + 2))
    objects.append(0)
    return quads, np.array(objects, dtype=np.int64)


def texture_lookup(quad: TexturedQuad, st: np.ndarray) -> np.ndarray:
    """Bilinear colour of the quad's texture at quad coordinates.

    st: (N, 2) float64 in [0, 1]^2 (clamped at the texture's edge pixel centres). Returns (N, 3) float64
    in [0, 255].
    """
    tex = quad.texture
    th, tw = tex.shape[:2]
    st = np.asarray(st, dtype=np.float64)
    x = np.clip(st[:, 0] * tw - 0.5, 0.0, tw - 1.0)  # texel (row, col) has its centre at (col + .5, row + .5)
    y = np.clip(st[:, 1] * th - 0.5, 0.0, th - 1.0)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, tw - 1), np.minimum(y0 + 1, th - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = tex[y0, x0] * (1 - fx) + tex[y0, x1] * fx  # uint8 * float64 -> float64
    bottom = tex[y1, x0] * (1 - fx) + tex[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def ray_cast(quads: list[TexturedQuad], origins: np.ndarray, dirs: np.ndarray,
             chunk: int = 32768) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit of each ray with the quads (two-sided), vectorised over rays and quads.

    origins: (N, 3), dirs: (N, 3) world frame (need not be unit; t is in units of |dir|). A ray hits quad q
    at t > 0 where `origin + t dir = q.origin + s q.axis_u + r q.axis_v` with s, r in [0, 1] (1e-9 slack).
    Returns t (N,) float64 (inf on a miss), quad_index (N,) int64 (-1 on a miss) and st (N, 2) float64
    (quad coordinates (s, r) of the hit, 0 on a miss). Ties go to the earlier quad.
    """
    origins = np.asarray(origins, dtype=np.float64)
    dirs = np.asarray(dirs, dtype=np.float64)
    n, n_quads = len(origins), len(quads)
    best_t, best_q, best_st = np.full(n, np.inf), np.full(n, -1, dtype=np.int64), np.zeros((n, 2))
    if n_quads == 0 or n == 0:
        return best_t, best_q, best_st
    # per quad: the normal and the dual basis (du, dv) of (axis_u, axis_v) in its plane, so that a point p
    # of the plane has s = (p - origin) . du and r = (p - origin) . dv
    basis = np.empty((3, 3, n_quads))  # [normal | du | dv] x xyz x quad
    for k, q in enumerate(quads):
        gram = np.array([[q.axis_u @ q.axis_u, q.axis_u @ q.axis_v], [q.axis_u @ q.axis_v, q.axis_v @ q.axis_v]])
        dual = np.linalg.solve(gram, np.stack([q.axis_u, q.axis_v]))
        basis[:, :, k] = [np.cross(q.axis_u, q.axis_v), dual[0], dual[1]]
    at_origin = np.einsum("bxk,kx->bk", basis, np.stack([q.origin for q in quads]))  # (3, Q)
    basis = basis.transpose(1, 0, 2).reshape(3, 3 * n_quads)
    eps = 1e-9
    for lo in range(0, n, chunk):
        sl = slice(lo, min(lo + chunk, n))
        a = (origins[sl] @ basis).reshape(-1, 3, n_quads) - at_origin  # origin coordinates, (C, 3, Q)
        b = (dirs[sl] @ basis).reshape(-1, 3, n_quads)  # direction coordinates
        with np.errstate(divide="ignore", invalid="ignore"):  # rays parallel to a quad: rejected below
            t = -a[:, 0] / b[:, 0]
            s = a[:, 1] + t * b[:, 1]
            r = a[:, 2] + t * b[:, 2]
        valid = (np.abs(b[:, 0]) > 1e-15) & (t > 1e-9) & (np.abs(s - 0.5) <= 0.5 + eps) & (np.abs(r - 0.5) <= 0.5 + eps)
        t[~valid] = np.inf
        k = np.argmin(t, axis=1)
        rows = np.arange(len(k))
        hit = np.isfinite(t[rows, k])
        best_t[sl] = t[rows, k]
        best_q[sl] = np.where(hit, k, -1)
        best_st[sl] = np.where(hit[:, None], np.clip(np.stack([s[rows, k], r[rows, k]], axis=1), 0.0, 1.0), 0.0)
    return best_t, best_q, best_st


def surface_colour(quads: list[TexturedQuad], quad_index: np.ndarray, st: np.ndarray) -> np.ndarray:
    """Texture colour at hits: quad_index (N,) with -1 for none, st (N, 2). Returns (N, 3) float64, NaN on -1."""
    out = np.full((len(quad_index), 3), np.nan)
    for k in np.unique(quad_index[quad_index >= 0]):
        sel = quad_index == k
        out[sel] = texture_lookup(quads[k], st[sel])
    return out


def sample_points(quads: list[TexturedQuad], n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n points uniformly by area on the quads, with their texture colour.

    Returns xyz (n, 3) float64 world frame and rgb (n, 3) uint8.
    """
    rng = np.random.default_rng(seed)
    areas = np.array([q.area for q in quads])
    which = rng.choice(len(quads), size=n, p=areas / areas.sum())
    st = rng.uniform(0.0, 1.0, (n, 2))
    xyz = np.empty((n, 3))
    for k in np.unique(which):
        sel = which == k
        xyz[sel] = quads[k].point(st[sel])
    rgb = np.clip(np.round(surface_colour(quads, which, st)), 0, 255).astype(np.uint8)
    return xyz, rgb


def quad_mesh(quads: list[TexturedQuad]) -> tuple[np.ndarray, np.ndarray]:
    """The quads as a triangle mesh (the exact surface, for scoring reconstructed meshes): vertices (4Q, 3)
    float64 (each quad's corners origin, +u, +u+v, +v) and triangles (2Q, 3) int64."""
    vertices = np.concatenate([[q.origin, q.origin + q.axis_u, q.origin + q.axis_u + q.axis_v, q.origin + q.axis_v]
                               for q in quads]).reshape(-1, 3)
    base = 4 * np.arange(len(quads))[:, None]
    triangles = np.concatenate([base + [0, 1, 2], base + [0, 2, 3]], axis=1).reshape(-1, 3)
    return vertices, triangles.astype(np.int64)
