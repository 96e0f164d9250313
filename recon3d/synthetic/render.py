"""Ray-cast rendering of textured quads, and calibration targets (chessboard, ChArUco) with their corners.

Pixels follow COLMAP's convention: pixel (row i, col j) has its centre at (j + 0.5, i + 0.5). A board lives
in its own frame: z = 0 on the board, x along the inner-corner columns, y along the rows (down in the
board's image), the camera looking at it along +z, as OpenCV's calibration functions expect.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from recon3d.geometry.projection import pixels_to_rays, transform_points
from recon3d.geometry.rotation import look_at
from recon3d.scene import Camera
from recon3d.synthetic.cameras import make_camera
from recon3d.synthetic.surfaces import TexturedQuad, ray_cast, surface_colour

BOARD_PX_PER_SQUARE = 50  # texture resolution of calibration boards


def render(quads: list[TexturedQuad], camera: Camera, cam_from_world: np.ndarray,
           background=(40, 40, 40), supersample: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Render the quads seen by `camera` at `cam_from_world` (4, 4), distortion included.

    Each pixel averages `supersample`^2 rays on a regular sub-pixel grid; with supersample = 1 the ray goes
    through the pixel centre (j + 0.5, i + 0.5). Returns rgb (H, W, 3) uint8 and depth (H, W) float64, the
    camera-frame z of the surface hit through the pixel centre, inf where the background shows.
    """
    if int(supersample) != supersample or supersample < 1:
        raise ValueError(f"render: supersample must be a positive integer, got {supersample!r}")
    cam_from_world = np.asarray(cam_from_world, dtype=np.float64)
    rotation = cam_from_world[:3, :3]
    center = -rotation.T @ cam_from_world[:3, 3]
    h, w = camera.height, camera.width
    colour = np.zeros((h * w, 3))
    t_center = None
    for dx, dy in _subpixel_offsets(supersample):
        dirs = _camera_rays(camera.model, camera.params.tobytes(), w, h, dx, dy) @ rotation  # R.T @ d per row
        t, quad_index, st = ray_cast(quads, np.broadcast_to(center, dirs.shape), dirs)
        hit = surface_colour(quads, quad_index, st)
        colour += np.where(np.isfinite(t)[:, None], hit, np.asarray(background, dtype=np.float64))
        if (dx, dy) == (0.5, 0.5):
            t_center = t
    rgb = np.clip(np.round(colour / supersample**2), 0, 255).astype(np.uint8).reshape(h, w, 3)
    dirs_cam = _camera_rays(camera.model, camera.params.tobytes(), w, h, 0.5, 0.5)
    if t_center is None:  # an even supersample has no ray through the pixel centre
        t_center, _, _ = ray_cast(quads, np.broadcast_to(center, dirs_cam.shape), dirs_cam @ rotation)
    depth = (t_center * dirs_cam[:, 2]).reshape(h, w)  # unit rays: z = t * (z component of the direction)
    return rgb, depth


def _subpixel_offsets(supersample: int) -> list[tuple[float, float]]:
    k = (np.arange(supersample) + 0.5) / supersample
    return [(float(dx), float(dy)) for dy in k for dx in k]


@lru_cache(maxsize=16)
def _camera_rays(model: str, params_bytes: bytes, width: int, height: int, dx: float, dy: float) -> np.ndarray:
    """Unit ray directions (H * W, 3), camera frame, through pixel (i, j) at (j + dx, i + dy), row-major."""
    params = np.frombuffer(params_bytes, dtype=np.float64)
    jj, ii = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    pixels = np.column_stack([jj.ravel() + dx, ii.ravel() + dy])
    _, dirs = pixels_to_rays(model, params, np.eye(4), pixels)
    dirs.setflags(write=False)
    return dirs


@dataclass(frozen=True)
class Board:
    """A planar calibration target in its own frame (z = 0, x along columns, y along rows, in `square` units).

    corners: inner chessboard corners (M, 3) float64, board frame, in OpenCV's order: row by row from the
    corner nearest the board origin, (squares[0] - 1) per row; for ChArUco, index = ChArUco corner id.
    """

    kind: str  # "chessboard" or "charuco"
    quad: TexturedQuad  # the printed sheet, margin included
    corners: np.ndarray  # (M, 3) float64
    squares: tuple[int, int]  # (columns, rows) of squares
    square: float  # side of a square, board units
    marker: float = 0.0  # side of an ArUco marker (ChArUco only)
    dictionary: str = ""  # cv2.aruco dictionary name (ChArUco only)

    @property
    def inner(self) -> tuple[int, int]:
        """(columns, rows) of inner corners: OpenCV's `patternSize`."""
        return self.squares[0] - 1, self.squares[1] - 1

    @property
    def size(self) -> tuple[float, float]:
        """Width and height of the squared area, board units."""
        return self.squares[0] * self.square, self.squares[1] * self.square


def _board(kind: str, texture_gray: np.ndarray, squares: tuple[int, int], square: float, margin: float,
           **extra) -> Board:
    cols, rows = squares
    jj, ii = np.meshgrid(np.arange(1, cols), np.arange(1, rows))
    corners = np.column_stack([jj.ravel() * square, ii.ravel() * square, np.zeros(jj.size)])
    quad = TexturedQuad(
        origin=np.array([-margin, -margin, 0.0]),
        axis_u=np.array([cols * square + 2 * margin, 0.0, 0.0]),
        axis_v=np.array([0.0, rows * square + 2 * margin, 0.0]),
        texture=np.ascontiguousarray(np.repeat(texture_gray[:, :, None], 3, axis=2)),
    )
    return Board(kind, quad, corners, (cols, rows), float(square), **extra)


def _margin_px(margin: float, square: float) -> int:
    m = margin / square * BOARD_PX_PER_SQUARE
    if abs(m - round(m)) > 1e-9:
        raise ValueError(f"board margin {margin} must be a multiple of square / {BOARD_PX_PER_SQUARE}")
    return round(m)


def chessboard(inner: tuple[int, int] = (9, 6), square: float = 1.0, margin: float = 1.0) -> Board:
    """A black-and-white chessboard with `inner` = (columns, rows) inner corners and a white margin.

    `square` and `margin` are lengths in the board's (and the world's) unit: a board of 5 cm squares wants a
    margin of a few centimetres (`chessboard((9, 6), 0.05, margin=0.05)`), as the default margin of 1.0 is a
    square's width only at `square=1`. The square at the board origin is black. Texture: BOARD_PX_PER_SQUARE
    texels per square.
    """
    cols, rows = inner[0] + 1, inner[1] + 1
    m, s = _margin_px(margin, square), BOARD_PX_PER_SQUARE
    tex = np.full((rows * s + 2 * m, cols * s + 2 * m), 255, np.uint8)
    ii, jj = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    cells = np.where((ii + jj) % 2 == 0, 0, 255).astype(np.uint8)
    tex[m:m + rows * s, m:m + cols * s] = np.kron(cells, np.ones((s, s), np.uint8))
    return _board("chessboard", tex, (cols, rows), square, margin)


def charuco(squares: tuple[int, int] = (7, 5), square: float = 1.0, marker: float = 0.7,
            dictionary: str = "DICT_4X4_50", margin: float = 0.5) -> Board:
    """A ChArUco board as `cv2.aruco.CharucoBoard(squares, square, marker, dictionary).generateImage` draws it.

    squares: (columns, rows). Corner i is ChArUco corner id i. Raises ValueError for an unknown dictionary.
    """
    if not dictionary.startswith("DICT_") or not hasattr(cv2.aruco, dictionary):
        raise ValueError(f"unknown ArUco dictionary {dictionary!r}; use a cv2.aruco DICT_* name")
    cv_board = cv2.aruco.CharucoBoard(tuple(squares), square, marker,
                                      cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, dictionary)))
    m, s = _margin_px(margin, square), BOARD_PX_PER_SQUARE
    size = (squares[0] * s + 2 * m, squares[1] * s + 2 * m)
    tex = cv_board.generateImage(size, marginSize=m, borderBits=1)
    return _board("charuco", tex, tuple(squares), square, margin, marker=float(marker), dictionary=dictionary)


def board_poses(n: int, seed: int = 0, board: Board | None = None, camera: Camera | None = None,
                max_tilt_deg: float = 40.0, off_center: float = 0.08) -> np.ndarray:
    """n varied views of a board, the whole sheet inside the image, for calibration.

    The camera looks at the board's front (from z < 0) along a direction tilted up to `max_tilt_deg` from
    the board normal, rolled by up to 15 degrees, from a distance at which the sheet's diagonal spans up to
    about 80 % of the image height (moved back until the sheet is inside the image with a 3 % border).
    The camera aims at a point up to `off_center` board widths from the sheet's centre, so larger values
    move the sheet towards the image borders (where distortion shows).
    Defaults: the default `chessboard()` and a 640x480 PINHOLE camera. Returns cam_from_board (n, 4, 4).
    """
    board = board if board is not None else chessboard()
    camera = camera if camera is not None else make_camera("PINHOLE", 640, 480)
    rng = np.random.default_rng(seed)
    q = board.quad
    center = q.origin + (q.axis_u + q.axis_v) / 2
    sheet = np.stack([q.origin, q.origin + q.axis_u, q.origin + q.axis_v, q.origin + q.axis_u + q.axis_v])
    fov = 2 * np.arctan(min(camera.width / camera.K[0, 0], camera.height / camera.K[1, 1]) / 2)
    base_distance = np.linalg.norm(q.axis_u + q.axis_v) / 2 / np.tan(fov / 2) / 0.8
    out: list[np.ndarray] = []
    for _ in range(100 * n):
        if len(out) == n:
            break
        tilt, azimuth = np.radians(rng.uniform(0, max_tilt_deg)), rng.uniform(0, 2 * np.pi)
        view = np.array([np.sin(tilt) * np.cos(azimuth), np.sin(tilt) * np.sin(azimuth), -np.cos(tilt)])
        roll = np.radians(rng.uniform(-15, 15))
        up = -np.array([-np.sin(roll), np.cos(roll), 0.0])  # the board's -y, rolled: image up
        aim = center + rng.uniform(-off_center, off_center, 3) * np.linalg.norm(q.axis_u) * np.array([1, 1, 0])
        distance = base_distance * rng.uniform(0.9, 1.2)
        for _ in range(20):
            cam_from_board = look_at(aim + distance * view, aim, up)
            pts = transform_points(cam_from_board, sheet)
            px = camera.project(pts)
            inside = (px[:, 0] > 0.03 * camera.width) & (px[:, 0] < 0.97 * camera.width) \
                & (px[:, 1] > 0.03 * camera.height) & (px[:, 1] < 0.97 * camera.height)
            if np.all(inside & (pts[:, 2] > 0)):
                out.append(cam_from_board)
                break
            distance *= 1.1
    if len(out) < n:
        raise ValueError(f"board_poses: could not fit the board inside a {camera.width}x{camera.height} "
                         f"{camera.model} image")
    return np.stack(out)


def render_board(board: Board, camera: Camera, cam_from_board: np.ndarray,
                 supersample: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render a board and project its inner corners.

    cam_from_board: (4, 4). Returns rgb (H, W, 3) uint8, corners_px (M, 2) float64 (COLMAP convention,
    NaN behind the camera) and visible (M,) bool (in front of the camera and inside the image).
    """
    rgb, _ = render([board.quad], camera, cam_from_board, background=(40, 40, 40), supersample=supersample)
    corners_cam = transform_points(cam_from_board, board.corners)
    corners_px = camera.project(corners_cam)
    with np.errstate(invalid="ignore"):
        visible = (corners_cam[:, 2] > 0) & np.all((corners_px >= 0) & (corners_px <= (camera.width,
                                                                                      camera.height)), axis=1)
    return rgb, corners_px, visible
