"""Camera calibration from pictures of a target (OpenCV): detection, mono and stereo fits, stereo depth.

Everything here takes and returns pixels in COLMAP's convention (centre of the top-left pixel at
(0.5, 0.5)). OpenCV's detectors use (0, 0); `targets.py` converts their output, and the functions that
index pixel arrays (rectification maps, remap) convert K back. The calibration fit itself is
translation-equivariant, so cv2.calibrateCamera fed COLMAP pixels returns COLMAP principal points.
"""
