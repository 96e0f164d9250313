"""recon3d.io: nerfstudio / Blender transforms, COLMAP models and image files, round trips and bad input."""

import dataclasses
import json
import math

import numpy as np
import pycolmap
import pytest
from PIL import ExifTags, Image

from recon3d.errors import DataError
from recon3d.geometry import camera_models
from recon3d.geometry.rotation import look_at
from recon3d.io import colmap, images, nerfstudio
from recon3d.scene import Camera, Features, ImageInfo, Points, Scene


def write_png(path, width=8, height=6, mode="RGB", value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (width, height), value).save(path)
    return path


def make_scene(root, models=("OPENCV",), n=4, splits=("train", "train", "val", "test"), subdir="sub dir",
               prefix="images/"):
    """`n` images on a circle of radius 4 looking at the origin, PNGs written under `root/images`.

    Names are `prefix` + the path under `root/images`: "images/" for nerfstudio (names relative to the
    data folder), "" for COLMAP (names relative to the image folder).
    """
    cameras = {}
    for cid, model in enumerate(models, start=1):
        names = camera_models.MODELS[model]
        distortion = (-0.05, 0.01, 1e-3, -2e-3, 1e-4)[: len(names) - (3 if names[0] == "f" else 4)]
        params = camera_models.make_params(model, (30.0 + cid, 31.0), (16.0, 12.0), distortion)
        cameras[cid] = Camera(model, 32, 24, params)
    infos, poses = [], {}
    for i in range(n):
        relative = f"{subdir + '/' if i == 3 else ''}f{i}.png"
        path, name = write_png(root / "images" / relative, 32, 24), prefix + relative
        angle = 2 * math.pi * i / n
        poses[name] = look_at((4 * math.cos(angle), 4 * math.sin(angle), 1.0 + 0.1 * i), (0.0, 0.0, 0.0))
        camera_id = 1 + i % len(models)
        infos.append(ImageInfo(name, str(path), camera_id, 32, 24, split=splits[i % len(splits)]))
    return Scene(images=tuple(infos), cameras=cameras, poses=poses)


def add_points(scene, seed=0):
    """Random keypoints per image and five points with tracks (one point without a computed error)."""
    rng = np.random.default_rng(seed)
    features = {im.name: Features((rng.random((6, 2)) * 20).astype(np.float32)) for im in scene.images}
    lengths = np.array([2, 3, 2, 4, 2])
    track_image = np.array([0, 1, 0, 2, 3, 1, 2, 0, 1, 2, 3, 3, 2], dtype=np.int32)
    # each keypoint observes at most one point, as COLMAP requires
    track_keypoint = np.array([np.sum(track_image[:i] == j) for i, j in enumerate(track_image)], np.int32)
    points = Points(xyz=rng.normal(size=(5, 3)), rgb=rng.integers(0, 256, (5, 3), dtype=np.uint8),
                    error=np.array([0.5, 1 / 3, np.nan, 2.0, 0.25]),
                    track_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                    track_image=track_image, track_keypoint=track_keypoint)
    return scene.replace(features=features, points=points)


def assert_same_cameras(a, b):
    assert a.keys() == b.keys()
    for cid in a:
        assert (a[cid].model, a[cid].width, a[cid].height) == (b[cid].model, b[cid].width, b[cid].height)
        np.testing.assert_array_equal(a[cid].params, b[cid].params)


def assert_same_poses(a, b):
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(b[name], a[name], atol=1e-12, rtol=0)


# -- nerfstudio / Blender --------------------------------------------------------------------------------

@pytest.mark.parametrize("models", [("OPENCV",), ("OPENCV", "OPENCV"), ("PINHOLE",), ("OPENCV_FISHEYE",)])
def test_transforms_round_trip(tmp_path, models):
    scene = make_scene(tmp_path, models)
    write_png(tmp_path / "masks" / "f0.png", 32, 24, mode="L", value=255)
    masked = dataclasses.replace(scene.images[0], mask_path=str(tmp_path / "masks/f0.png"))
    scene = scene.replace(images=(masked,) + scene.images[1:])
    nerfstudio.write_transforms(scene, tmp_path / "transforms.json", ply_path=tmp_path / "points.ply")
    meta = json.loads((tmp_path / "transforms.json").read_text())
    assert ("fl_x" in meta) == (len(models) == 1) and meta["ply_file_path"] == "points.ply"
    assert meta["frames"][3]["file_path"] == "images/sub dir/f3.png"

    back = nerfstudio.read_transforms(tmp_path)
    assert back.source.format == "nerfstudio"
    assert [im.name for im in back.images] == [im.name for im in scene.images]
    assert [im.path for im in back.images] == [im.path for im in scene.images]
    assert [im.split for im in back.images] == ["train", "train", "val", "test"]
    assert back.images[0].mask_path == str(tmp_path / "masks/f0.png")
    assert [im.camera_id for im in back.images] == [im.camera_id for im in scene.images]
    assert_same_cameras(scene.cameras, back.cameras)
    assert_same_poses(scene.poses, back.poses)


def test_opengl_frame_is_converted_to_opencv(tmp_path):
    write_png(tmp_path / "a.png", 8, 8)
    c2w = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 5], [0, 0, 0, 1]]  # at (0, 0, 5), looking along -z (OpenGL)
    meta = {"fl_x": 8, "fl_y": 8, "cx": 4, "cy": 4, "w": 8, "h": 8, "camera_model": "PINHOLE",
            "frames": [{"file_path": "./a.png", "transform_matrix": c2w}]}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    scene = nerfstudio.read_transforms(tmp_path)
    cam_from_world = scene.poses["a.png"]
    np.testing.assert_allclose(cam_from_world @ [0, 0, 0, 1], [0, 0, 5, 1])  # origin in front, depth +5
    np.testing.assert_allclose(cam_from_world @ [0, 1, 0, 1], [0, -1, 5, 1])  # world up = image up (y down)
    np.testing.assert_allclose(cam_from_world @ [1, 0, 0, 1], [1, 0, 5, 1])  # right stays right
    camera = scene.cameras[1]
    assert camera.model == "PINHOLE" and camera.project(np.array([0.0, 0.0, 5.0]))[1] == 4.0
    assert camera.project((cam_from_world @ [0, 1, 0, 1])[:3])[1] < 4.0  # world up is above the centre
    np.testing.assert_allclose(nerfstudio.cam_from_world_to_opengl_c2w(cam_from_world), c2w, atol=1e-15)


def test_blender_synthetic(tmp_path):
    angle = 2 * math.atan(0.5)  # fx = 0.5 * W / tan(angle / 2) = W
    c2w = np.eye(4)
    c2w[:3, 3] = [0.0, -4.0, 1.0]
    for split, names in (("train", ["r_0", "r_1"]), ("test", ["r_0"])):
        frames = [{"file_path": f"./{split}/{n}", "transform_matrix": c2w.tolist()} for n in names]
        meta = {"camera_angle_x": angle, "frames": frames}
        (tmp_path / f"transforms_{split}.json").write_text(json.dumps(meta))
        for n in names:
            write_png(tmp_path / split / f"{n}.png", 8, 6, mode="RGBA", value=(1, 2, 3, 0))
    scene = nerfstudio.read_transforms(tmp_path)
    assert scene.source.format == "blender"
    assert [(im.name, im.split) for im in scene.images] == [
        ("train/r_0.png", "train"), ("train/r_1.png", "train"), ("test/r_0.png", "test")]
    assert (scene.images[0].width, scene.images[0].height) == (8, 6)
    assert list(scene.cameras) == [1]
    camera = scene.cameras[1]
    assert camera.model == "PINHOLE" and (camera.width, camera.height) == (8, 6)
    np.testing.assert_allclose(camera.params, [8.0, 8.0, 4.0, 3.0])
    np.testing.assert_allclose(scene.poses["test/r_0.png"], nerfstudio.opengl_c2w_to_cam_from_world(c2w))


def test_write_transforms_refuses_what_nerfstudio_cannot_hold(tmp_path):
    scene = make_scene(tmp_path, ("FULL_OPENCV",))
    rational = camera_models.make_params("FULL_OPENCV", (30.0, 30.0), (16.0, 12.0), (0, 0, 0, 0, 0, 0.01))
    scene = scene.replace(cameras={1: Camera("FULL_OPENCV", 32, 24, rational)})
    with pytest.raises(DataError, match="FULL_OPENCV"):
        nerfstudio.write_transforms(scene, tmp_path / "transforms.json")
    with pytest.raises(DataError, match="no posed images"):
        nerfstudio.write_transforms(scene.replace(poses={}), tmp_path / "transforms.json")


def test_transforms_bad_input_names_the_file(tmp_path):
    with pytest.raises(DataError, match="has no transforms.json"):
        nerfstudio.read_transforms(tmp_path)
    file = tmp_path / "transforms.json"
    file.write_text('{"frames": [')
    with pytest.raises(DataError, match=f"{file} is not valid JSON"):
        nerfstudio.read_transforms(tmp_path)
    meta = {"fl_x": 8, "cx": 4, "cy": 4, "w": 8, "h": 8,
            "frames": [{"file_path": "images/gone.png", "transform_matrix": np.eye(4).tolist()}]}
    file.write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"transforms.json: image .*gone.png does not exist"):
        nerfstudio.read_transforms(tmp_path)
    write_png(tmp_path / "images/gone.png")
    meta["frames"][0]["transform_matrix"] = np.diag([2.0, 1, 1, 1]).tolist()
    file.write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"transforms.json, frame 0 is malformed .*not a rigid"):
        nerfstudio.read_transforms(tmp_path)


# -- COLMAP ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("binary", [True, False])
def test_colmap_round_trip(tmp_path, binary):
    # COLMAP's text format separates fields by spaces: no space in names there
    subdir = "sub dir" if binary else "sub"
    scene = add_points(make_scene(tmp_path, ("OPENCV", "SIMPLE_RADIAL"), subdir=subdir, prefix=""))
    model_dir = colmap.write_model(scene, tmp_path / "sparse" / "0", binary=binary)
    assert colmap.find_model(tmp_path) == (tmp_path / "sparse" / "0", tmp_path / "images")

    rec = pycolmap.Reconstruction(str(model_dir))
    assert (rec.num_cameras(), rec.num_images(), rec.num_points3D()) == (2, 4, 5)
    assert rec.image(1).name == "f0.png"

    back = colmap.read_model(*colmap.find_model(tmp_path))
    assert (back.source.format, back.source.path) == ("colmap", str(tmp_path))
    assert [(im.name, im.path, im.camera_id) for im in back.images] == [
        (im.name, im.path, im.camera_id) for im in scene.images]
    assert_same_cameras(scene.cameras, back.cameras)
    assert_same_poses(scene.poses, back.poses)
    for name, feats in scene.features.items():
        assert back.features[name].keypoints.dtype == np.float32
        np.testing.assert_array_equal(back.features[name].keypoints, feats.keypoints)
    for field in ("xyz", "rgb", "error", "track_offsets", "track_image", "track_keypoint"):
        np.testing.assert_array_equal(getattr(back.points, field), getattr(scene.points, field))


def test_colmap_rewrite_in_the_other_format_replaces_files(tmp_path):
    scene = make_scene(tmp_path, subdir="sub", prefix="")
    colmap.write_model(scene, tmp_path / "sparse", binary=True)
    colmap.write_model(scene, tmp_path / "sparse", binary=False)
    assert sorted(p.suffix for p in (tmp_path / "sparse").iterdir()) == [".txt"] * 5


def test_colmap_bad_input(tmp_path):
    assert colmap.find_model(tmp_path) is None
    with pytest.raises(DataError, match=f"cannot read the COLMAP model in {tmp_path}"):
        colmap.read_model(tmp_path, tmp_path)
    scene = add_points(make_scene(tmp_path, prefix=""))
    colmap.write_model(scene, tmp_path / "sparse")
    (tmp_path / "images" / "f1.png").unlink()
    with pytest.raises(DataError, match="lacks 1 image.* e.g. f1.png"):
        colmap.read_model(tmp_path / "sparse", tmp_path / "images")
    unposed = scene.replace(poses={k: v for k, v in scene.poses.items() if k != "f0.png"})
    with pytest.raises(DataError, match="keypoint 0 of f0.png, which has no pose"):
        colmap.write_model(unposed, tmp_path / "other")
    with pytest.raises(DataError, match="'sub dir/f3.png' has a space"):
        colmap.write_model(scene, tmp_path / "other", binary=False)


# -- images ----------------------------------------------------------------------------------------------

def test_list_images(tmp_path):
    for name in ["b.png", "a.JPG", "sub/c.jpeg", "sub/masks/d.tiff", ".hidden.png", ".git/x.png",
                 "masks/a.JPG.png", "notes.txt", "z.bmp"]:
        write_png(tmp_path / name) if not name.endswith(".txt") else (tmp_path / name).write_text("x")
    found = images.list_images(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a.JPG", "b.png", "sub/c.jpeg", "sub/masks/d.tiff", "z.bmp"]
    with pytest.raises(DataError, match="does not exist"):
        images.list_images(tmp_path / "nope")


def test_read_and_write_pixels(tmp_path):
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, np.arange(8, dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(images.read_rgb(tmp_path / "rgba.png"), rgba[..., :3])
    np.testing.assert_array_equal(images.read_rgba(tmp_path / "rgba.png"), rgba)
    gray = write_png(tmp_path / "gray.png", mode="L", value=7)
    rgb = images.read_rgb(gray)
    assert rgb.shape == (6, 8, 3) and rgb.dtype == np.uint8 and (rgb == 7).all()
    assert (images.read_rgba(gray)[..., 3] == 255).all()
    assert images.image_size(gray) == (8, 6)
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    images.write_rgb(tmp_path / "out" / "w.png", pixels)
    np.testing.assert_array_equal(images.read_rgb(tmp_path / "out" / "w.png"), pixels)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["w.png"]  # no temporary file left


def test_exif_focal(tmp_path):
    assert images.exif_focal_px(write_png(tmp_path / "plain.png"), 8, 6) is None
    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.FocalLengthIn35mmFilm] = 27
    Image.new("RGB", (8, 6)).save(tmp_path / "cam.jpg", exif=exif)
    assert images.exif_focal_px(tmp_path / "cam.jpg", 8, 6) == pytest.approx(27 * 10 / math.hypot(36, 24))
    assert images.exif_focal_px(tmp_path / "cam.jpg", 12, 8) == pytest.approx(27 / 36 * 12)  # 3:2 as 35 mm film


def test_unreadable_image_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    for read in (images.image_size, images.read_rgb):
        with pytest.raises(DataError, match="broken.png"):
            read(bad)
    truncated = tmp_path / "truncated.png"
    write_png(tmp_path / "full.png", 64, 64)
    truncated.write_bytes((tmp_path / "full.png").read_bytes()[:60])
    with pytest.raises(DataError, match="truncated.png"):
        images.read_rgb(truncated)


def test_sixteen_bit_grey_images_are_scaled_to_eight_bits(tmp_path):
    """A 16-bit PNG (a raw converter's export) reads as its 8-bit image, not as Pillow's convert clips it (every
    value above 255 white: no keypoints in any image)."""
    ramp = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    rgb = images.read_rgb(tmp_path / "deep.png")
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[..., 0], np.round(ramp / 257).astype(np.uint8))
    Image.fromarray(np.full((4, 4), 200, np.int32), mode="I").save(tmp_path / "eight_in_i.tif")
    assert (images.read_rgb(tmp_path / "eight_in_i.tif") == 200).all()  # 8-bit values in mode I stay


def test_transforms_naming_photos_by_absolute_path_keep_their_folder_names(tmp_path):
    """recon3d's export names the photos by absolute path (they stay where the user keeps them): read back from
    another folder, the images are named as in the photo folder, not `../photos/a.png`."""
    for i, name in enumerate(("a.png", "sub/b.png")):
        write_png(tmp_path / "photos" / name, 8, 8, value=i)
    c2w = np.eye(4).tolist()
    meta = {"fl_x": 8, "fl_y": 8, "cx": 4, "cy": 4, "w": 8, "h": 8, "camera_model": "PINHOLE",
            "frames": [{"file_path": str(tmp_path / "photos" / n), "transform_matrix": c2w}
                       for n in ("a.png", "sub/b.png")]}
    (tmp_path / "posed").mkdir()
    (tmp_path / "posed/transforms.json").write_text(json.dumps(meta))
    scene = nerfstudio.read_transforms(tmp_path / "posed")
    assert [im.name for im in scene.images] == ["a.png", "sub/b.png"]
    assert scene.images[1].path == str(tmp_path / "photos/sub/b.png")


def test_link_or_copy_links_replaces_and_leaves_a_link_to_the_same_file_alone(tmp_path):
    """Publishing a cached node again links the same file onto its own link: nothing to do, and no temporary
    name left behind (a rename between two links of one file does nothing)."""
    from recon3d.io.files import link_or_copy

    source, target = tmp_path / "cache.bin", tmp_path / "out.bin"
    source.write_bytes(b"model")
    link_or_copy(source, target)
    assert target.samefile(source)
    link_or_copy(source, target)
    assert target.samefile(source) and sorted(p.name for p in tmp_path.iterdir()) == ["cache.bin", "out.bin"]
    other = tmp_path / "other.bin"
    other.write_bytes(b"another")
    link_or_copy(other, target)  # replaced, not written through: the first file keeps its bytes
    assert target.read_bytes() == b"another" and source.read_bytes() == b"model"
