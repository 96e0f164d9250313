"""ingest: each data layout is recognised and read; bad folders are named; the input scene is untouched."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from recon3d.errors import DataError
from recon3d.io import colmap, nerfstudio
from recon3d.scene import Scene
from recon3d.stages import ingest
from recon3d.stages.base import StageContext
from tests.test_io import add_points, make_scene, write_png


def run(path, **kw):
    ctx = StageContext.standalone("ingest")
    return ingest.run(Scene(), ingest.IngestConfig(path=str(path), **kw), ctx), ctx


def test_image_folder_with_masks_and_a_corrupt_file(tmp_path):
    write_png(tmp_path / "images/a.png", 40, 30)
    write_png(tmp_path / "images/b.png", 40, 30, value=110)
    write_png(tmp_path / "images/c.jpg", 30, 40)
    (tmp_path / "images/broken.jpg").write_bytes(b"not a jpeg at all")
    write_png(tmp_path / "masks/a.png.png", 40, 30, mode="L", value=255)
    scene, ctx = run(tmp_path)
    assert [im.name for im in scene.images] == ["a.png", "b.png", "c.jpg"]
    assert scene.source.format == "images"
    assert len(scene.cameras) == 2  # one per image size
    cam = scene.cameras[scene.images[0].camera_id]
    assert cam.model == "SIMPLE_RADIAL"
    np.testing.assert_allclose(cam.params, [1.2 * 40, 20, 15, 0])
    assert scene.images[0].mask_path.endswith("masks/a.png.png") and scene.images[1].mask_path is None
    assert ctx.dropped == [{"item": "broken.jpg", "reason": ctx.dropped[0]["reason"]}]
    assert "broken.jpg" in ctx.dropped[0]["reason"]
    assert ctx.counts["images"] == 3
    assert "not_images" not in ctx.counts


def test_files_that_are_not_images_are_named(tmp_path):
    """A note, a sidecar or a video beside the photos is not read, and the ingest row says which (K.txt, read
    for the intrinsics, is not among them; hidden files are nobody's business)."""
    write_png(tmp_path / "a.png", 40, 30)
    for name in ("notes.txt", "IMG_1.AAE", "clip.mov", ".DS_Store"):
        (tmp_path / name).write_text("x")
    (tmp_path / "K.txt").write_text("40 0 20\n0 40 15\n0 0 1\n")
    _, ctx = run(tmp_path)
    assert ctx.counts["not_images"].startswith("3 file(s) not read, not images by their extension (")
    assert ctx.counts["not_images"].endswith(": IMG_1.AAE, clip.mov, notes.txt")


def test_a_copied_photo_is_left_out_and_named(tmp_path):
    write_png(tmp_path / "a.png", 20, 10)
    write_png(tmp_path / "b.png", 20, 10, value=7)
    (tmp_path / "c.png").write_bytes((tmp_path / "a.png").read_bytes())
    scene, ctx = run(tmp_path)
    assert [im.name for im in scene.images] == ["a.png", "b.png"]
    assert ctx.dropped == [{"item": "c.png", "reason": ctx.dropped[0]["reason"]}]
    assert "the same file as a.png" in ctx.dropped[0]["reason"]


def test_a_colmap_database_from_another_run_is_said_to_be_unread(tmp_path):
    write_png(tmp_path / "images/a.png", 20, 10)
    write_png(tmp_path / "images/b.png", 20, 10, value=7)
    _, ctx = run(tmp_path)
    assert "not_read" not in ctx.counts
    (tmp_path / "database.db").write_bytes(b"SQLite format 3\0")  # COLMAP's, beside images/
    scene, ctx = run(tmp_path)
    assert [im.name for im in scene.images] == ["a.png", "b.png"] and not scene.features
    assert ctx.counts["not_read"].startswith("database.db (features and matches are computed afresh")


def test_photos_of_one_exif_camera_share_its_intrinsics(tmp_path):
    """As COLMAP's image reader: photos of one size from one EXIF camera (make, model, focal length) share a
    camera, its focal from the EXIF; another phone, another zoom or the phone turned (another size) get their
    own; without EXIF, one camera per size."""
    def photo(name, size, make="Apple", model="iPhone 7", f35=28, value=0):
        exif = Image.Exif()
        exif[271], exif[272] = make, model
        exif.get_ifd(0x8769)[41989] = f35  # FocalLengthIn35mmFilm
        Image.new("RGB", size, (value, 90, 30)).save(tmp_path / name, exif=exif)

    for i in range(3):
        photo(f"portrait{i}.jpg", (30, 40), value=10 * i)
    photo("landscape.jpg", (40, 30))
    photo("zoomed.jpg", (30, 40), f35=56)
    photo("other_phone.jpg", (30, 40), make="Google", model="Pixel 8")
    write_png(tmp_path / "plain1.png", 30, 40)
    write_png(tmp_path / "plain2.png", 30, 40, value=7)
    scene, _ = run(tmp_path)
    camera = {im.name: im.camera_id for im in scene.images}
    assert camera["portrait0.jpg"] == camera["portrait1.jpg"] == camera["portrait2.jpg"]
    assert camera["plain1.png"] == camera["plain2.png"]
    assert len({camera[n] for n in ("portrait0.jpg", "landscape.jpg", "zoomed.jpg", "other_phone.jpg",
                                    "plain1.png")}) == 5 and len(scene.cameras) == 5
    assert scene.cameras[camera["portrait0.jpg"]].params[0] == pytest.approx(28 * 50 / math.hypot(36, 24))
    assert scene.cameras[camera["zoomed.jpg"]].params[0] == pytest.approx(56 * 50 / math.hypot(36, 24))
    assert len(run(tmp_path, single_camera=False)[0].cameras) == 8


def test_heic_photos_are_read_through_jpeg_copies(tmp_path):
    """iPhones save HEIC: each HEIC / HEIF / AVIF / WebP photo becomes `<name>.jpg` in the node's folder, its pixels
    as libheif turns them (a HEIC saved with EXIF orientation 6 is stored turned: 30x40 shown), its EXIF camera kept
    (the two share one); a damaged one is named and left out; JPEGs beside them are used where they are."""
    import pillow_heif

    exif = Image.Exif()
    exif[271], exif[272], exif[274] = "Apple", "iPhone 12", 6
    exif.get_ifd(0x8769)[41989] = 26
    rgb = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    for name in ("IMG_0001.HEIC", "IMG_0002.heif"):
        pillow_heif.from_pillow(Image.fromarray(rgb)).save(tmp_path / name, exif=exif.tobytes(), quality=90)
        rgb = rgb[::-1].copy()
    (tmp_path / "IMG_0003.heic").write_bytes((tmp_path / "IMG_0001.HEIC").read_bytes()[:200])  # cut short
    Image.fromarray(rgb[:, ::-1]).save(tmp_path / "phone.avif")
    Image.fromarray(rgb[::-1, ::-1]).save(tmp_path / "web.webp", exif=exif.tobytes())  # Android, a download
    write_png(tmp_path / "plain.png", 40, 30)
    write_png(tmp_path / "masks/IMG_0001.HEIC.png", 30, 40, mode="L", value=255)  # named as the user's file
    scene, ctx = run(tmp_path)
    assert [im.name for im in scene.images] == ["IMG_0001.HEIC.jpg", "IMG_0002.heif.jpg", "phone.avif.jpg",
                                                "plain.png", "web.webp.jpg"]
    first, second, avif, plain, webp = scene.images
    assert (avif.width, avif.height) == (40, 30) and avif.path.endswith("decoded/phone.avif.jpg")
    assert first.path == str(ctx.workdir / "decoded/IMG_0001.HEIC.jpg") and plain.path == str(tmp_path / "plain.png")
    assert (first.width, first.height) == (30, 40) and first.mask_path.endswith("masks/IMG_0001.HEIC.png")
    with Image.open(first.path) as copy:
        assert copy.format == "JPEG" and copy.size == (30, 40)
        assert copy.getexif()[272] == "iPhone 12" and copy.getexif().get(274, 1) == 1
    with Image.open(webp.path) as copy:  # a WebP stores its pixels unturned: its EXIF orientation goes along
        assert copy.format == "JPEG" and copy.size == (40, 30) and copy.getexif()[274] == 6
    assert first.camera_id == second.camera_id != plain.camera_id
    assert scene.cameras[first.camera_id].params[0] == pytest.approx(26 * 50 / math.hypot(36, 24))
    assert [d["item"] for d in ctx.dropped] == ["IMG_0003.heic"] and "IMG_0003.heic" in ctx.dropped[0]["reason"]
    assert ctx.counts["jpeg_copies"].startswith("4 HEIC/HEIF/AVIF/WebP photo(s) decoded to JPEG copies")


def test_one_camera_per_image_when_not_shared(tmp_path):
    for value, n in enumerate("abc"):
        write_png(tmp_path / f"{n}.png", 20, 10, value=value)
    scene, _ = run(tmp_path, single_camera=False, camera_model="PINHOLE")
    assert len(scene.cameras) == 3 and scene.cameras[1].model == "PINHOLE"


def test_k_txt_gives_the_intrinsics(tmp_path):
    for value, n in enumerate("ab"):
        write_png(tmp_path / f"images/{n}.png", 40, 30, value=value)
    (tmp_path / "K.txt").write_text("50 0 21\n0 52 14\n0 0 1\n")
    scene, _ = run(tmp_path, camera_model="PINHOLE")
    assert len(scene.cameras) == 1
    np.testing.assert_allclose(scene.cameras[1].params, [50, 52, 21, 14])
    scene, _ = run(tmp_path, intrinsics_file="")
    np.testing.assert_allclose(scene.cameras[1].params, [48, 20, 15, 0])
    (tmp_path / "K.txt").write_text("50 0 21\n0 52 14\n")
    with pytest.raises(DataError, match="K.txt must hold a 3x3 K"):
        run(tmp_path)


def test_nerfstudio_folder_poses_round_trip(tmp_path):
    truth = make_scene(tmp_path, models=("OPENCV",))
    nerfstudio.write_transforms(truth, tmp_path / "transforms.json")
    scene, ctx = run(tmp_path)
    assert ctx.counts["format"] == "nerfstudio" and "not_read" not in ctx.counts
    for name, pose in truth.poses.items():
        np.testing.assert_allclose(scene.poses[name], pose, atol=1e-12)


def test_a_nerfstudio_point_cloud_is_said_not_read(tmp_path):
    """ns-process-data's `ply_file_path` cloud has no tracks: the ingest row names it as not read (the training
    commands triangulate from the poses instead), and the scene holds no points."""
    truth = make_scene(tmp_path, models=("OPENCV",))
    nerfstudio.write_transforms(truth, tmp_path / "transforms.json", ply_path=tmp_path / "sparse_pc.ply")
    scene, ctx = run(tmp_path)
    assert scene.points is None and ctx.counts["not_read"].startswith("sparse_pc.ply (ply_file_path: ")
    assert "not_read" not in run(tmp_path, poses=False)[1].counts  # set aside with the poses: nothing to say


def test_poses_can_be_set_aside_and_a_nan_pose_is_dropped_by_name(tmp_path):
    truth = make_scene(tmp_path, models=("OPENCV",))
    nerfstudio.write_transforms(truth, tmp_path / "transforms.json")
    scene, ctx = run(tmp_path, poses=False)
    assert scene.poses == {} and len(scene.images) == len(truth.images) and scene.cameras.keys() == truth.cameras.keys()
    meta = json.loads((tmp_path / "transforms.json").read_text())
    meta["frames"][1]["transform_matrix"][0][3] = float("nan")  # json writes NaN, as a buggy exporter might
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    scene, ctx = run(tmp_path)
    bad = truth.images[1].name
    assert bad not in scene.poses and len(scene.poses) == len(truth.poses) - 1
    assert bad in [im.name for im in scene.images]
    assert [d["item"] for d in ctx.dropped] == [bad] and "not finite" in ctx.dropped[0]["reason"]


def test_colmap_project_with_points(tmp_path):
    truth = add_points(make_scene(tmp_path, prefix=""))
    colmap.write_model(truth, tmp_path / "sparse/0")
    scene, ctx = run(tmp_path)
    assert ctx.counts["format"] == "colmap" and ctx.counts["points"] == 5
    np.testing.assert_array_equal(scene.points.xyz, truth.points.xyz)
    for name, pose in truth.poses.items():
        np.testing.assert_allclose(scene.poses[name], pose, atol=1e-12)


def test_fingerprint_follows_the_content(tmp_path):
    write_png(tmp_path / "a.png", 8, 8)
    cfg = ingest.IngestConfig(path=str(tmp_path))
    before = ingest.fingerprint(cfg)
    assert ingest.fingerprint(cfg) == before
    Image.new("RGB", (8, 8), 7).save(tmp_path / "a.png")
    changed = ingest.fingerprint(cfg)
    assert changed != before
    (tmp_path / "database.db").write_bytes(b"SQLite format 3\0")  # not read, so not part of the key
    assert ingest.fingerprint(cfg) == changed


def test_input_scene_is_not_edited(tmp_path):
    write_png(tmp_path / "a.png", 8, 8)
    scene = Scene(metrics={"x": 1})
    before = scene.content_hash()
    out = ingest.run(scene, ingest.IngestConfig(path=str(tmp_path)))
    assert scene.content_hash() == before and out.metrics == {"x": 1} and len(out.images) == 1


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "no images found in"),
    (lambda p: (p / "notes.txt").write_text("hi"), "no images found in"),
])
def test_bad_folders_are_named(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(DataError, match=message):
        run(tmp_path)
    with pytest.raises(DataError, match="--data is missing"):
        ingest.run(Scene(), ingest.IngestConfig())


def test_each_photo_carries_its_exif_exposure(tmp_path):
    """log2(time x ISO / f-number^2) from EXIF, per photo (the radiance trainers' exposure input); None for a
    photo without time or ISO; the ingest report says how many photos carry one and the span in stops."""
    from PIL.TiffImagePlugin import IFDRational as Fraction

    from recon3d.io.images import exif_exposure

    for name, tags in (("a.jpg", {0x829A: Fraction(1, 60), 0x8827: 25, 0x829D: Fraction(9, 5)}),
                       ("b.jpg", {0x829A: Fraction(1, 120), 0x8827: (40,)}),  # ISO as a tuple; no f-number
                       ("c.jpg", {0x829A: Fraction(1, 60)})):  # no ISO
        exif = Image.Exif()
        for tag, value in tags.items():
            exif.get_ifd(0x8769)[tag] = value
        Image.new("RGB", (40, 30), (120, 90, 30)).save(tmp_path / name, exif=exif)
    assert exif_exposure(tmp_path / "a.jpg") == pytest.approx(math.log2(25 / 60 / 1.8**2))
    assert exif_exposure(tmp_path / "b.jpg") == pytest.approx(math.log2(40 / 120))
    assert exif_exposure(tmp_path / "c.jpg") is None
    ctx = StageContext.standalone("ingest")
    scene = ingest.run(Scene(), ingest.IngestConfig(path=str(tmp_path)), ctx)
    assert scene.image("b.jpg").exposure == pytest.approx(math.log2(40 / 120))
    assert scene.image("c.jpg").exposure is None
    assert ctx.counts["exif_exposure"].startswith("2 of 3 photo(s), spanning 1.")
    loaded = Scene.load(scene.save(tmp_path / "saved"))
    assert loaded.image("a.jpg").exposure == scene.image("a.jpg").exposure


def test_a_black_and_white_photo_among_colour_ones_is_said(tmp_path):
    write_png(tmp_path / "a.png", 40, 30, value=(90, 60, 30))
    write_png(tmp_path / "b.png", 40, 30, value=(30, 60, 90))
    write_png(tmp_path / "c.png", 40, 30, mode="L", value=77)
    scene, ctx = run(tmp_path)
    assert len(scene.images) == 3 and ctx.counts["grey_photos"].startswith("1 black-and-white photo(s) among "
                                                                          "colour ones: c.png; they help place")
    (tmp_path / "a.png").unlink()
    (tmp_path / "b.png").unlink()
    write_png(tmp_path / "d.png", 40, 30, mode="L", value=120)
    assert "grey_photos" not in run(tmp_path)[1].counts  # a black-and-white folder: nothing to say


def test_labelme_files_beside_the_photos_are_found_and_not_called_unread(tmp_path):
    """labelme saves <photo>.json beside each photo: `labels: auto` reads them, and they are not listed among the
    files ingest did not read; a .json that is not labelme's leaves the folder unlabeled."""
    import json

    for name, value in (("a", 60), ("b", 120)):
        write_png(tmp_path / f"{name}.png", 40, 30, value=(value,) * 3)
    shape = {"label": "cat", "points": [[5, 5], [20, 15]], "shape_type": "rectangle", "group_id": None}
    (tmp_path / "a.json").write_text(json.dumps({"shapes": [shape], "imagePath": "a.png", "imageHeight": 30,
                                                 "imageWidth": 40}))
    scene, ctx = run(tmp_path)
    assert scene.class_names == ("_background_", "cat") and list(scene.labels) == ["a.png"]  # labelme's table
    assert "not_images" not in ctx.counts
    (tmp_path / "a.json").write_text(json.dumps({"note": "not labels"}))
    scene, ctx = run(tmp_path)
    assert not scene.labels and "a.json" in ctx.counts["not_images"]


def test_a_yolo_data_yaml_is_found_and_its_splits_kept(tmp_path):
    """coco8's layout: images/{train,val}/, labels/{train,val}/ and a data yaml under its own name. `labels:
    auto` finds the one yaml with `names:`, and the images take its train / val split (held out by the labelling
    stages as the data says); a label of an image the data does not have names the setting that skips it."""
    for split, names in (("train", ("a", "b")), ("val", ("c",))):
        for name in names:  # each its own grey: copies of one photo would be left out
            write_png(tmp_path / "images" / split / f"{name}.png", 40, 30, value=(ord(name),) * 3)
            (tmp_path / "labels" / split).mkdir(parents=True, exist_ok=True)
            (tmp_path / "labels" / split / f"{name}.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    (tmp_path / "mine.yaml").write_text("path: ../elsewhere\ntrain: images/train\nval: images/val\nnames: {0: cat}\n")
    (tmp_path / "notes.yaml").write_text("names: [of, people]\n")  # no train: / val:, so not labels
    scene, ctx = run(tmp_path)
    assert scene.class_names == ("cat",) and len(scene.labels) == 3
    assert {im.name: im.label_split for im in scene.images} == {"train/a.png": "train", "train/b.png": "train",
                                                                "val/c.png": "val"}
    assert all(im.split == "" for im in scene.images)  # the radiance fields' split is the data's, not the labels'
    assert ctx.counts["label_splits"] == "train 2, val 1"
    from recon3d.stages.labels_common import split_labeled

    assert split_labeled(scene, 8).held_out == ["val/c.png"]  # detect / segment hold out the yaml's val
    (tmp_path / "mine.yaml").write_text("train: images/train\nval: images/train\nnames: {0: cat}\n")
    scene, _ = run(tmp_path)  # one folder under both (coco128's yaml): no split, the stages' every 8th holds
    assert len(scene.labels) == 2 and all(im.label_split == "" for im in scene.images)
    (tmp_path / "mine.yaml").write_text("train: images/train\nval: images/val\nnames: {0: cat}\n")
    (tmp_path / "labels/train/zzz.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    with pytest.raises(DataError, match="zzz.*--set ingest.unknown_label_images=skip"):
        run(tmp_path)
