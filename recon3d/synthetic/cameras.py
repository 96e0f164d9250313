"""Realistic intrinsics for every COLMAP camera model recon3d knows.

Principal points sit slightly off the image centre (+0.7 px, -0.4 px), fy differs from fx by 0.3 % where
the model has both, and the distortion is mild and monotonic out to the image corners (checked).
"""

from __future__ import annotations

import numpy as np

from recon3d.geometry import camera_models
from recon3d.scene import Camera

# distortion coefficients in COLMAP order, per model
DISTORTION: dict[str, tuple[float, ...]] = {
    "SIMPLE_PINHOLE": (),
    "PINHOLE": (),
    "SIMPLE_RADIAL": (-0.06,),
    "RADIAL": (-0.07, 0.012),
    "OPENCV": (-0.08, 0.015, 0.0008, -0.0005),
    "OPENCV_FISHEYE": (0.03, -0.008, 0.002, -0.0005),
    "FULL_OPENCV": (-0.08, 0.015, 0.0008, -0.0005, 0.002, 0.01, 0.002, 0.0005),
}
PRINCIPAL_OFFSET = (0.7, -0.4)  # pixels, from the image centre


def make_camera(model: str, width: int, height: int, fov_deg: float = 60.0) -> Camera:
    """A camera of `model` (a key of `camera_models.MODELS`) with horizontal field of view `fov_deg`.

    Pinhole-type models get fx = (width / 2) / tan(fov / 2); OPENCV_FISHEYE, which is equidistant, gets
    fx = (width / 2) / (fov / 2 in radians). Raises ValueError for an unknown model or a field of view for
    which the model's distortion would fold over inside the image.
    """
    camera_models.check_model(model)
    if width < 2 or height < 2 or not 0.0 < fov_deg < 170.0:
        raise ValueError(f"make_camera: need width, height >= 2 and 0 < fov_deg < 170, got "
                         f"{width}x{height}, fov {fov_deg}")
    half = np.radians(fov_deg) / 2
    fx = (width / 2) / (half if model == "OPENCV_FISHEYE" else np.tan(half))
    principal = (width / 2 + PRINCIPAL_OFFSET[0], height / 2 + PRINCIPAL_OFFSET[1])
    params = camera_models.make_params(model, (fx, fx * 1.003), principal, DISTORTION[model])
    camera = Camera(model, int(width), int(height), params)
    if not is_monotonic(camera):
        raise ValueError(f"make_camera: the {model} distortion folds over inside a {width}x{height} image at "
                         f"fov {fov_deg} degrees; use a smaller field of view")
    return camera


def is_monotonic(camera: Camera, samples: int = 2000) -> bool:
    """Whether the distorted radius grows strictly with the undistorted one out to past every image corner.

    Walks normalised coordinates from the principal point towards each corner until the distorted point
    lies 5 % beyond the corner's radius; False if it turns back first or never gets there.
    """
    focal, principal, _ = camera_models.split_params(camera.model, camera.params)
    for corner in [(0, 0), (camera.width, 0), (0, camera.height), (camera.width, camera.height)]:
        target = (np.asarray(corner, dtype=np.float64) - principal) / focal
        rho = np.linalg.norm(target)
        r = np.linspace(0.0, 4.0 * rho, samples)
        uv = r[:, None] * (target / rho)
        radius = np.linalg.norm(camera_models.distort(camera.model, camera.params, uv), axis=1)
        beyond = np.flatnonzero(radius > 1.05 * rho)
        if len(beyond) == 0 or np.any(np.diff(radius[: beyond[0] + 1]) <= 0):
            return False
    return True
