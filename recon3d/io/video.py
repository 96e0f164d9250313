"""Keyframes of a video for structure from motion (`--data clip.mp4`).

The video is decoded once with OpenCV (FFmpeg). Frames are taken in windows of `every` frames: from each
window the sharpest frame (largest variance of the Laplacian, as blur detectors do), and it becomes a keyframe
when it moved enough from the last keyframe (the mean absolute difference of 64-px-wide grey thumbnails is at
least `min_motion` of full scale), so a camera standing still adds no frames. Keyframes are written as
lossless PNGs named by frame index, and listed with their timestamps in `keyframes.json` beside their folder
(not in it: the folder is read as the scene's images).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from recon3d.errors import DataError
from recon3d.io.files import write_json

# FFmpeg's own log lines (`[mov,mp4,...] moov atom not found`) would come before recon3d's one-line error: quiet
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg")
THUMB_WIDTH = 64


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class Keyframe:
    name: str  # frame_000123.png
    path: Path
    index: int  # frame index in the video
    seconds: float  # timestamp


def _sharpness(grey: np.ndarray) -> float:
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def _thumbnail(grey: np.ndarray) -> np.ndarray:
    h, w = grey.shape
    return cv2.resize(grey, (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w))), interpolation=cv2.INTER_AREA) \
        .astype(np.float32) / 255


def extract_keyframes(video: Path, folder: Path, every: int, min_motion: float, max_frames: int = 0) -> list[Keyframe]:
    """Keyframes of `video` written into `folder` (see the module's docstring); DataError naming the video when
    it cannot be opened or decoded, or yields fewer than two keyframes."""
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise DataError(f"cannot open video {video}", "pass a video OpenCV's FFmpeg decodes (MP4/H.264, MOV, AVI, MKV)"
                        ", or a folder of its frames")
    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    folder.mkdir(parents=True, exist_ok=True)
    keyframes: list[Keyframe] = []
    last_thumb, best, index = None, None, 0
    try:
        while True:
            ok, frame = capture.read()
            if ok:
                grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
                score = _sharpness(grey)
                if best is None or score > best[0]:
                    best = (score, index, frame, grey)
                index += 1
            if best is not None and (not ok or index % every == 0):  # a window is complete
                _, at, chosen, grey = best
                thumb = _thumbnail(grey)
                if last_thumb is None or float(np.abs(thumb - last_thumb).mean()) >= min_motion:
                    name = f"frame_{at:06d}.png"
                    cv2.imwrite(str(folder / name), chosen)
                    keyframes.append(Keyframe(name, folder / name, at, at / fps if fps > 0 else float(at)))
                    last_thumb = thumb
                best = None
                if max_frames and len(keyframes) >= max_frames:
                    break
            if not ok:
                break
    finally:
        capture.release()
    if index == 0:
        raise DataError(f"cannot decode any frame of video {video}", "check that the file is a complete video "
                        "OpenCV's FFmpeg decodes, or pass a folder of its frames")
    if len(keyframes) < 2:
        raise DataError(f"video {video}: {index} frame(s) gave {len(keyframes)} keyframe(s); structure from motion "
                        "needs two or more", "use a longer video" + ("" if index < 2 else
                                                                     ", or fewer frames per keyframe: --set "
                                                                     "ingest.video_every=N (lower), --set "
                                                                     "ingest.video_min_motion=0"))
    write_json(folder.parent / "keyframes.json", {"video": str(video), "fps": fps, "frames": index, "keyframes": [
        {"name": k.name, "frame": k.index, "seconds": round(k.seconds, 4)} for k in keyframes]})
    return keyframes
