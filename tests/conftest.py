"""Fixtures shared by several test modules: a folder of photos as a user brings it, and the runs made from it."""

import tempfile

import numpy as np
import pytest
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from recon3d.paths import HOME
from tests.test_cli import recon3d


@pytest.fixture(scope="session", autouse=True)
def temporary_folders_under_pytest(tmp_path_factory):
    """Stages called without a node folder (`StageContext.standalone`) write into a fresh temporary folder
    the caller owns; in the tests that folder lies under pytest's base folder, which pytest prunes, so
    repeated test runs do not pile folders up in /tmp."""
    previous, tempfile.tempdir = tempfile.tempdir, str(tmp_path_factory.mktemp("standalone"))
    yield
    tempfile.tempdir = previous


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    """The 24 rendered views of the demo scene in a plain folder (no transforms.json, no ground_truth/); two of
    them turned a quarter (a portrait beside landscapes), as a phone stores them; a photo SfM cannot
    register and a file that is no image. Their EXIF records exposures a stop apart (1/60 s and 1/120 s at ISO
    25; the pixels as rendered), as a phone's automatic exposure varies."""
    folder = tmp_path_factory.mktemp("photos") / "photos"
    folder.mkdir()
    for i, src in enumerate(sorted((HOME / "data/demo/images").glob("*.png"))):
        image = Image.open(src).convert("RGB")
        if i in (5, 13):
            image = image.transpose(Image.Transpose.ROTATE_90)
        exif = Image.Exif()
        exif.get_ifd(0x8769).update({0x829A: IFDRational(1, 120 if i % 2 else 60), 0x8827: 25})
        image.save(folder / f"IMG_{i:02d}.jpg", quality=95, exif=exif)
    noise = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "pocket.png")  # a photo of nothing: SfM cannot register it
    (folder / "notes.jpg").write_text("not an image")  # unreadable: named, skipped
    return folder


@pytest.fixture(scope="session")
def photo_runs(photos, tmp_path_factory):
    """`recon3d run sfm`, then `recon3d splat` (a few steps) into the same --out."""
    out = tmp_path_factory.mktemp("photo-run") / "out"
    sfm = recon3d("run", "sfm", "--data", photos, "--out", out)
    # 150 steps: Gaussians as large as the points' spacing (mcmc's preset starts them at a tenth, for longer runs)
    splat = recon3d("splat", "--data", photos, "--out", out, "--steps", 150, "--set", "gaussians.sky_points=500",
                    "--set", "gaussians.init_scale=1")
    return out, sfm, splat
