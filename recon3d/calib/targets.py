"""Calibration targets: their 3D corner layout and their detection in an image."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from recon3d.errors import DataError

# OpenCV's ChArUco detector (4.13) reports corners half a pixel right/down of its own (0, 0)-centred
# convention (opencv issue 25539), i.e. already in COLMAP's convention; chessboard detectors do not.
CHARUCO_OFFSET_TO_COLMAP = 0.0
CHESSBOARD_OFFSET_TO_COLMAP = 0.5


@dataclass(frozen=True)
class BoardSpec:
    """A printed target. Chessboard: `corners` inner corners (columns, rows). ChArUco: `squares`."""

    kind: str  # "chessboard" or "charuco"
    corners: tuple[int, int] = (9, 6)
    squares: tuple[int, int] = (7, 5)
    square: float = 1.0  # side of a square, in the units the user wants poses in
    marker: float = 0.7  # ChArUco marker side, same units
    dictionary: str = "DICT_4X4_50"

    def object_points(self) -> np.ndarray:
        """Corner positions in the board frame (M, 3) float64, z = 0; row i is corner id i."""
        if self.kind == "chessboard":
            cols, rows = self.corners
            grid = np.stack(np.meshgrid(np.arange(cols), np.arange(rows)), -1).reshape(-1, 2)
            return np.column_stack([grid * self.square, np.zeros(len(grid))])
        return np.asarray(self.charuco_board().getChessboardCorners(), dtype=np.float64)

    def charuco_board(self) -> cv2.aruco.CharucoBoard:
        dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard(tuple(self.squares), self.square, self.marker, dictionary)


@dataclass(frozen=True)
class Detection:
    """Corners found in one image, COLMAP pixel convention; `ids` index `BoardSpec.object_points()`."""

    corners: np.ndarray  # (K, 2) float64
    ids: np.ndarray  # (K,) int64
    size: tuple[int, int]  # (width, height) of the image


def read_gray(path: str) -> np.ndarray:
    """(H, W) uint8; DataError naming the file when it cannot be decoded."""
    image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise DataError(f"{path} could not be read as an image", "remove or replace the file")
    return image


def detect(path: str, spec: BoardSpec, detector: str = "classic", window: int = 11,
           min_corners: int = 6) -> Detection | str:
    """Find the target's corners in the image at `path`; a string says why none were used."""
    try:
        gray = read_gray(path)
    except DataError as exc:
        return exc.problem
    size = (gray.shape[1], gray.shape[0])
    if spec.kind == "charuco":
        corners, ids, _, _ = cv2.aruco.CharucoDetector(spec.charuco_board()).detectBoard(gray)
        if ids is None or len(ids) < min_corners:
            return f"{0 if ids is None else len(ids)} ChArUco corners found (< {min_corners})"
        return Detection(corners.reshape(-1, 2).astype(np.float64) + CHARUCO_OFFSET_TO_COLMAP,
                         ids.ravel().astype(np.int64), size)
    if detector == "sb":
        flags = cv2.CALIB_CB_EXHAUSTIVE | cv2.CALIB_CB_ACCURACY
        found, corners = cv2.findChessboardCornersSB(gray, spec.corners, flags)
    else:
        found, corners = cv2.findChessboardCorners(
            gray, spec.corners, cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE)
        if found:
            criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-4)
            corners = cv2.cornerSubPix(gray, corners, (window // 2, window // 2), (-1, -1), criteria)
    if not found:
        return f"no {spec.corners[0]}x{spec.corners[1]} chessboard found"
    pts = corners.reshape(-1, 2).astype(np.float64) + CHESSBOARD_OFFSET_TO_COLMAP
    return Detection(pts, np.arange(len(pts), dtype=np.int64), size)
