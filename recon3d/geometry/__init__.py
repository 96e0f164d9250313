"""Pure float64 geometry: rotations, COLMAP camera models, projection, Sim(3).

Conventions (../CONVENTIONS.md): poses are world-to-camera, `x_cam = R @ X_world + t`, OpenCV camera axes
(x right, y down, z forward); pixels are continuous with the centre of the top-left pixel at (0.5, 0.5),
as in COLMAP.
"""
