"""Scene: exact save/load round trip of every field kind, hashing, merging, immutability."""

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from recon3d.errors import DataError, StageError
from recon3d.geometry.rotation import look_at
from recon3d.scene import (
    Calibration,
    Camera,
    Features,
    ImageInfo,
    Labels,
    Points,
    RadianceModel,
    Scene,
    Source,
    StereoCalibration,
    TwoViewGeometry,
)


def full_scene() -> Scene:
    """A scene with every field filled, with awkward values (NaN, empty arrays, unicode, tuple keys)."""
    rng = np.random.default_rng(0)
    names = ("a/im 1.png", "b/ïm2.jpg")
    return Scene(
        source=Source(path="/data/x", format="images"),
        images=tuple(ImageInfo(n, f"/data/x/{n}", 1, 64, 48, mask_path=None if i else "/m.png",
                               split="train" if i else "")
                     for i, n in enumerate(names)),
        cameras={1: Camera("OPENCV", 64, 48, np.array([50.0, 51.0, 32.0, 24.0, -0.1, 0.01, 1e-3, -1e-3])),
                 2: Camera("SIMPLE_PINHOLE", 10, 10, np.array([1.0, 5.0, 5.0]))},
        calibration={1: Calibration(1, 0.41, rng.random(8), {"a/im 1.png": 0.3}, {"b/ïm2.jpg": "rms 9 px"})},
        stereo=StereoCalibration(1, 2, look_at([0.3, 0, 0], [0.3, 1, 0]), 0.45, 0.12),
        features={n: Features(rng.random((5, 2)).astype(np.float32),
                              rng.integers(0, 255, (5, 128), dtype=np.uint8)) for n in names}
        | {"empty": Features(np.zeros((0, 2), np.float32))},
        matches={names: np.array([[0, 1], [2, 3]], dtype=np.int32)},
        two_view={names: TwoViewGeometry("calibrated", np.array([True, False]), E=rng.random((3, 3)),
                                         cam2_from_cam1=look_at([0, 0, 0], [0, 1, 0]), tri_angle_deg=3.5)},
        poses={n: look_at(rng.normal(size=3), np.zeros(3)) for n in names},
        points=Points(xyz=rng.normal(size=(3, 3)), rgb=rng.integers(0, 255, (3, 3), dtype=np.uint8),
                      error=np.array([0.1, np.nan, 0.3]), track_offsets=np.array([0, 2, 3, 4]),
                      track_image=np.array([0, 1, 0, 1], np.int32), track_keypoint=np.array([0, 1, 2, 3], np.int32)),
        class_names=("person", "car"),
        labels={names[0]: Labels(np.array([[1.0, 2.0, 3.0, 4.0]]), np.array([1], np.int32),
                                 scores=np.array([0.9], np.float32), masks=np.zeros((1, 48, 64), bool))},
        radiance={"splat": RadianceModel("gaussians", "/out/model.ply")},
        metrics={"psnr": 31.2, "nested": {"list": [1, 2.5, None, "x"], "inf": float("inf")}},
        reports={"ingest": {"seconds": 0.1, "dropped": []}},
    )


def assert_same(a, b, path="scene"):
    assert type(a) is type(b), f"{path}: {type(a)} != {type(b)}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        np.testing.assert_array_equal(a, b, err_msg=path)
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), path
    else:
        assert a == b, path


def test_round_trip_is_exact(tmp_path):
    scene = full_scene()
    assert set(scene.filled_fields()) == {f.name for f in dataclasses.fields(Scene)}
    scene.save(tmp_path / "s")
    loaded = Scene.load(tmp_path / "s")
    assert_same(scene, loaded)
    assert loaded.content_hash() == scene.content_hash()
    # and a second round trip writes the same bytes
    loaded.save(tmp_path / "t")
    assert (tmp_path / "s/scene.json").read_text() == (tmp_path / "t/scene.json").read_text()


def test_empty_scene_round_trips(tmp_path):
    Scene().save(tmp_path)
    assert_same(Scene.load(tmp_path), Scene())


def test_pooled_arrays_keep_layout_dtype_and_are_read_only(tmp_path):
    """Arrays are stored as slices of one buffer per dtype: odd layouts, byte orders and shapes come back
    exact, and loaded arrays cannot be written into (a stage returns a new scene; its input is shared)."""
    grid = np.arange(24, dtype=np.float64).reshape(4, 6)
    odd = {"fortran": np.asfortranarray(grid), "strided": grid[::2, ::3], "big_endian": grid.astype(">f8"),
           "scalar": np.array(7.5), "empty": np.zeros((0, 3)), "bools": np.array([True, False, True])}
    scene = Scene(metrics={"odd": odd}, matches={("a", str(i)): np.full((i, 2), i, np.int32) for i in range(50)})
    scene.save(tmp_path)
    loaded = Scene.load(tmp_path)
    assert_same(scene, loaded)
    assert loaded.content_hash() == scene.content_hash()
    with pytest.raises(ValueError, match="read-only"):
        loaded.matches[("a", "7")][:] = -1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["matches.npz", "metrics.npz", "scene.json"]


def test_loaded_arrays_are_maps_of_the_files_and_compressed_members_still_load(tmp_path):
    """Loading reads no array: each is a read-only view of a memory map of its field's file (a node reads the
    pages it touches). An npz whose members are compressed (written by another tool) loads by reading them."""
    scene = full_scene()
    scene.save(tmp_path)
    loaded = Scene.load(tmp_path)
    keypoints = next(iter(loaded.features.values())).keypoints
    base = keypoints
    while base.base is not None and not isinstance(base, np.memmap):
        base = base.base
    assert isinstance(base, np.memmap) and Path(base.filename) == tmp_path / "features.npz"
    with np.load(tmp_path / "features.npz") as npz:
        pools = {k: npz[k] for k in npz.files}
    np.savez_compressed(tmp_path / "features.npz", **pools)
    assert_same(Scene.load(tmp_path), scene)


def test_untouched_fields_are_linked_from_the_base_folder(tmp_path):
    """save(base=...) links the file of a field that is the base's very object, writes the others; the saved
    scene reads back the same either way."""
    full_scene().save(tmp_path / "parent")
    parent = Scene.load(tmp_path / "parent")
    child = parent.replace(poses={n: p + 1.0 for n, p in parent.poses.items()})
    child.save(tmp_path / "child", base=(parent, tmp_path / "parent"))
    def linked(file):
        return os.path.samefile(tmp_path / "parent" / file, tmp_path / "child" / file)

    assert linked("features.npz") and linked("matches.npz") and not linked("poses.npz")
    assert_same(Scene.load(tmp_path / "child"), child)
    child.save(tmp_path / "plain")
    assert Scene.load(tmp_path / "plain").content_hash() == child.content_hash()


def test_a_scene_saved_in_format_1_still_loads(tmp_path):
    """Ground truth written by an older recon3d (data/demo's, users' synthetic sets): one npz member per array."""
    import json

    from recon3d.scene import _encode

    scene = full_scene()
    arrays: dict = {}
    state = _encode(scene, arrays)
    np.savez(tmp_path / "arrays.npz", **arrays)
    (tmp_path / "scene.json").write_text(json.dumps({"format": 1, "scene": state}))
    assert_same(Scene.load(tmp_path), scene)


def test_a_table_pointing_outside_its_pool_is_a_damaged_scene(tmp_path):
    import json

    Scene(matches={("a", "b"): np.zeros((3, 2), np.int32)}).save(tmp_path)
    meta = json.loads((tmp_path / "scene.json").read_text())
    meta["arrays"]["matches.a0"][2] = 5  # offset 5 of a 6-element pool: the slice runs past its end
    (tmp_path / "scene.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="damaged scene"):
        Scene.load(tmp_path)
    meta["arrays"]["matches.a0"][:3] = ["../x.npz", "pool0", 0]  # a file outside the scene's folder
    (tmp_path / "scene.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="damaged scene.*not a file of the scene"):
        Scene.load(tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "zero", "delete"])
def test_a_damaged_array_file_is_a_damaged_scene(tmp_path, damage):
    full_scene().save(tmp_path)
    path = tmp_path / "features.npz"
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "zero":
        path.write_bytes(bytes(len(data)))
    else:
        path.unlink()
    with pytest.raises(DataError, match="holds a damaged scene"):
        Scene.load(tmp_path)


def test_save_leaves_no_temporary_files(tmp_path):
    full_scene().save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "calibration.npz", "cameras.npz", "features.npz", "labels.npz", "matches.npz", "points.npz", "poses.npz",
        "scene.json", "stereo.npz", "two_view.npz"]  # a file per field holding arrays, nothing else


def test_hash_sees_array_changes_and_ignores_dict_order():
    scene = full_scene()
    moved = scene.replace(poses={k: v + 1e-12 for k, v in scene.poses.items()})
    assert moved.content_hash() != scene.content_hash()
    reordered = scene.replace(poses=dict(reversed(list(scene.poses.items()))))
    assert reordered.content_hash() == scene.content_hash()
    as_float32 = scene.replace(poses={k: v.astype(np.float32) for k, v in scene.poses.items()})
    assert as_float32.content_hash() != scene.content_hash()


def test_replace_does_not_touch_the_original():
    scene = full_scene()
    before = scene.content_hash()
    scene.replace(poses={}, metrics={"x": 1})
    assert scene.content_hash() == before
    with pytest.raises(dataclasses.FrozenInstanceError):
        scene.poses = {}  # type: ignore[misc]


def test_load_of_a_non_scene_folder_names_it(tmp_path):
    with pytest.raises(DataError, match="is not a saved recon3d scene"):
        Scene.load(tmp_path)


def test_objects_that_would_need_pickle_are_refused(tmp_path):
    with pytest.raises(TypeError, match="cannot hold a set"):
        Scene(metrics={"s": {1, 2}}).save(tmp_path)
    with pytest.raises(TypeError, match="object arrays"):
        Scene(metrics={"a": np.array([None])}).save(tmp_path)


def test_bad_camera_is_refused_when_built():
    with pytest.raises(ValueError, match="takes 4 parameters"):
        Camera("PINHOLE", 10, 10, np.ones(3))


def test_merge_unites_dicts_and_refuses_conflicts():
    base = full_scene()
    a = base.replace(metrics={"a": 1}, radiance={})
    b = base.replace(metrics={"b": 2}, radiance={"n": RadianceModel("nerf", "/x")})
    merged = a.merge(b)
    assert merged.metrics == {"a": 1, "b": 2} and set(merged.radiance) == {"n"}
    with pytest.raises(StageError, match=r"disagree on metrics\['a'\]"):
        a.merge(base.replace(metrics={"a": 3}), names=("x", "y"))
    with pytest.raises(StageError, match="both set `points` differently"):
        a.merge(base.replace(points=dataclasses.replace(base.points, error=np.zeros(3))))
