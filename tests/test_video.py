"""`--data clip.mp4`: keyframes from a video (sharpest per window, none while the camera stands still), their
timestamps, sequential matching with quadratic overlap, and bad videos; end to end on a synthetic walk."""

import json

import cv2
import numpy as np
import pytest

from recon3d.errors import DataError
from recon3d.io.video import extract_keyframes
from recon3d.paths import HOME
from tests.test_cli import one_line_error, recon3d

FPS, HOLD = 30, 10  # each rendered view held for 10 frames: one keyframe window


def write_video(path, frames, fps=FPS):
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The demo scene's 24 orbit views, each held for HOLD frames, as an MPEG-4 video."""
    views = [cv2.imread(str(p)) for p in sorted((HOME / "data/demo/images").glob("*.png"))]
    return write_video(tmp_path_factory.mktemp("video") / "walk.mp4", [v for v in views for _ in range(HOLD)])


def test_one_sharp_keyframe_per_window_with_its_timestamp(clip, tmp_path):
    keyframes = extract_keyframes(clip, tmp_path / "frames", every=HOLD, min_motion=0.01)
    assert len(keyframes) == 24
    assert [k.index // HOLD for k in keyframes] == list(range(24))  # one from each held view
    assert all(k.seconds == pytest.approx(k.index / FPS) for k in keyframes)
    listed = json.loads((tmp_path / "keyframes.json").read_text())
    assert listed["frames"] == 24 * HOLD and [k["name"] for k in listed["keyframes"]] == [k.name for k in keyframes]
    assert cv2.imread(str(keyframes[0].path)).shape == (240, 320, 3)


def test_the_sharpest_frame_of_a_window_is_taken(tmp_path):
    sharp = cv2.imread(str(HOME / "data/demo/images/000.png"))
    blurred = cv2.GaussianBlur(sharp, (9, 9), 3)
    frames = [blurred, blurred, sharp, blurred] + [cv2.flip(f, 1) for f in (blurred, sharp, blurred, blurred)]
    keyframes = extract_keyframes(write_video(tmp_path / "v.mp4", frames), tmp_path / "f", every=4, min_motion=0)
    assert [k.index for k in keyframes] == [2, 5]


def test_a_camera_standing_still_adds_no_keyframes(tmp_path):
    still = cv2.imread(str(HOME / "data/demo/images/000.png"))
    video = write_video(tmp_path / "still.mp4", [still] * 60)
    with pytest.raises(DataError, match="gave 1 keyframe"):
        extract_keyframes(video, tmp_path / "f", every=10, min_motion=0.01)
    assert len(extract_keyframes(video, tmp_path / "g", every=10, min_motion=0)) == 6


def test_structure_from_motion_from_a_video(clip, tmp_path):
    out = tmp_path / "out"
    proc = recon3d("run", "sfm", "--data", clip, "--out", out)
    assert proc.returncode == 0, proc.stderr
    ingest = json.loads((out / "reports/ingest.json").read_text())["counts"]
    assert ingest["format"] == "video" and ingest["keyframes"] == 24
    matched = json.loads((out / "reports/match.json").read_text())["counts"]
    assert matched["pairing"] == "sequential" and matched["pairs_candidate"] < 24 * 23 // 2
    assert json.loads((out / "reports/bundle_adjust.json").read_text())["counts"]["images"] == 24  # all posed


def test_bad_videos_are_one_line(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(np.random.default_rng(0).integers(0, 255, 4096, dtype=np.uint8).tobytes())
    one_line_error(recon3d("run", "sfm", "--data", broken, "--out", tmp_path / "a"), "broken.mp4")
    short = write_video(tmp_path / "short.mp4", [cv2.imread(str(HOME / "data/demo/images/000.png"))] * 3)
    one_line_error(recon3d("run", "sfm", "--data", short, "--out", tmp_path / "b"), "short.mp4",
                   "needs two or more", "--set ingest.video_every")
    text = tmp_path / "notes.txt"
    text.write_text("no video")
    one_line_error(recon3d("run", "sfm", "--data", text, "--out", tmp_path / "c"), "is a file, but not a video")
