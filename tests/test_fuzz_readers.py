"""Fuzzed readers: every reader of a user's file, fed a valid file cut short, overwritten, spliced or replaced
(and its JSON restructured), ends in a DataError / ConfigError naming the file, or reads it; never another
exception. `make test` runs 300 cases per reader; `-m slow` a thousand (and prints the counts)."""

from __future__ import annotations

import dataclasses
import json
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recon3d.dag.pipeline import load_pipeline, parse_sets
from recon3d.errors import DataError, Recon3dError
from recon3d.io import colmap, images, nerfstudio, ply, splat_ply, splat_spz, splat_web
from recon3d.io import labels as lio
from recon3d.paths import HOME
from recon3d.stages import ingest
from tests.test_io import add_points, make_scene
from tests.test_labels_io import box_labels, labelme_file, make_images, polygon_labels, shape

# -- mutations ----------------------------------------------------------------------------------------------


def byte_mutations(valid: bytes) -> st.SearchStrategy[bytes]:
    n = len(valid)
    return st.one_of(
        st.integers(0, n - 1).map(lambda k: valid[:k]),  # cut short
        st.tuples(st.integers(0, n - 1), st.binary(min_size=1, max_size=16))  # overwritten
        .map(lambda t: valid[:t[0]] + t[1] + valid[t[0] + len(t[1]):]),
        st.tuples(st.integers(0, n), st.binary(min_size=1, max_size=16))  # spliced in
        .map(lambda t: valid[:t[0]] + t[1] + valid[t[0]:]),
        st.tuples(st.integers(0, n - 1), st.integers(1, 64)).map(lambda t: valid[:t[0]] + valid[t[0] + t[1]:]),
        st.binary(max_size=256),  # something else altogether
    )


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)
DELETE = object()


def _paths(obj, where=()) -> list[tuple]:
    found = [where]
    if isinstance(obj, dict):
        for k, v in obj.items():
            found += _paths(v, (*where, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:4]):
            found += _paths(v, (*where, i))
    return found


def _replaced(obj, where: tuple, value):
    if not where:
        return None if value is DELETE else value
    copy = dict(obj) if isinstance(obj, dict) else list(obj)
    if len(where) == 1 and value is DELETE:
        del copy[where[0]]
    else:
        copy[where[0]] = _replaced(copy[where[0]], where[1:], value)
    return copy


def json_mutations(valid) -> st.SearchStrategy[bytes]:
    """The valid JSON with one value (anywhere) replaced by another JSON value or removed, or its bytes mutated."""
    structural = st.tuples(st.sampled_from(_paths(valid)), JSON_VALUES | st.just(DELETE)).map(
        lambda t: json.dumps(_replaced(valid, *t)).encode())
    return st.one_of(structural, structural, byte_mutations(json.dumps(valid).encode()))


def text_mutations(valid: str) -> st.SearchStrategy[bytes]:
    lines = valid.splitlines(keepends=True)
    words = st.sampled_from(["", "nan", "-1", "1e309", "x", "0", "[", "{", ":", "- ", "\t", "9" * 30, "\x00"])
    line_edit = st.tuples(st.integers(0, len(lines) - 1), st.lists(words, max_size=4)).map(
        lambda t: "".join(lines[:t[0]] + [" ".join(t[1]) + "\n"] + lines[t[0] + 1:]).encode())
    return st.one_of(line_edit, line_edit, byte_mutations(valid.encode()))


# -- readers ------------------------------------------------------------------------------------------------


@dataclass
class Reader:
    """`target` is the file a case overwrites with the mutated bytes; `read` reads what holds it."""

    target: Path
    cases: st.SearchStrategy[bytes]
    read: Callable[[], object]
    names: tuple[str, ...] = ()  # what the error must name (default: the target file's name)


def transforms_json(root: Path) -> Reader:
    scene = make_scene(root, prefix="images/")
    path = nerfstudio.write_transforms(scene, root / "transforms.json")
    return Reader(path, json_mutations(json.loads(path.read_text())), lambda: nerfstudio.read_transforms(root))


def colmap_model(root: Path, binary: bool, file: str) -> Reader:
    scene = add_points(make_scene(root, prefix="", subdir="sub"))  # a text model holds no spaces
    model = colmap.write_model(scene, root / "sparse/0", binary=binary)
    path = model / file
    valid = path.read_bytes()
    cases = byte_mutations(valid) if binary else st.one_of(text_mutations(valid.decode()), byte_mutations(valid))
    return Reader(path, cases, lambda: colmap.read_model(model, root / "images"), (file, str(model)))


def k_txt(root: Path) -> Reader:
    path = root / "K.txt"
    valid = "50 0 21\n0 52 14\n0 0 1\n"
    path.write_text(valid)
    return Reader(path, text_mutations(valid), lambda: ingest._read_k(path))


def coco(root: Path) -> Reader:
    infos = make_images(root)
    tri = [[2.0, 3.0], [12.5, 3.25], [7.0, 11.75]]
    labels = {"a.png": polygon_labels([[tri]], [1]), "sub/b.png": box_labels([[0.5, 1.25, 7.75, 9.0]], [0])}
    path = lio.write_coco(root / "c.json", ("x", "y"), labels, infos)
    return Reader(path, json_mutations(json.loads(path.read_text())), lambda: lio.read_labels(path, infos))


def yolo(root: Path, file: str) -> Reader:
    infos = make_images(root)
    labels = {"a.png": box_labels([[1, 2, 11, 12]], [1]), "sub/b.png": box_labels([[0.5, 1.25, 7.75, 9.0]], [0])}
    data = lio.write_yolo_dataset(root / "ds", ("x", "y"), labels, infos)
    path = data if file == "yaml" else sorted((root / "ds").rglob("*.txt"))[0]
    names = (path.name, ".txt")  # a yaml that lost a class name is found out at a label file's line
    return Reader(path, text_mutations(path.read_text()), lambda: lio.read_labels(data, infos), names)


def labelme(root: Path) -> Reader:
    infos = make_images(root)
    path = labelme_file(root / "lm/a.json", [shape("cat", [[1, 1], [9, 2], [5, 8]]),
                                              shape("dog", [[3, 3], [6, 6]], "rectangle"),
                                              shape("cat", [[10, 10], [13, 10]], "circle")])
    return Reader(path, json_mutations(json.loads(path.read_text())), lambda: lio.read_labels(root / "lm", infos))


def voc(root: Path, file: str) -> Reader:
    infos = make_images(root)
    masks = np.zeros((1, 30, 40), dtype=bool)
    masks[0, 5:12, 4:20] = True
    labels = {"a.png": dataclasses.replace(box_labels([[4, 5, 20, 12]], [1]), masks=masks)}
    folder = lio.write_voc(root / "voc", ("background", "cat"), labels, infos[:1])
    path = folder / file if file == "class_names.txt" else sorted((folder / "SegmentationClass").iterdir())[0]
    cases = text_mutations(path.read_text()) if path.suffix == ".txt" else byte_mutations(path.read_bytes())
    return Reader(path, cases, lambda: lio.read_labels(folder, infos[:1]))


def splats(root: Path) -> Reader:
    rng = np.random.default_rng(0)
    tensors = {"means": rng.normal(size=(5, 3)), "scales": rng.normal(size=(5, 3)), "quats": rng.normal(size=(5, 4)),
               "opacities": rng.normal(size=5), "sh0": rng.normal(size=(5, 1, 3)), "shN": rng.normal(size=(5, 3, 3))}
    path = splat_ply.write_splats(root / "point_cloud.ply", {k: v.astype(np.float32) for k, v in tensors.items()})
    return Reader(path, byte_mutations(path.read_bytes()), lambda: splat_ply.read_splats(path))


def dot_splat(root: Path) -> Reader:
    rng = np.random.default_rng(0)
    tensors = {"means": rng.normal(size=(5, 3)), "scales": rng.normal(size=(5, 3)), "quats": rng.normal(size=(5, 4)),
               "opacities": rng.normal(size=5), "sh0": rng.normal(size=(5, 1, 3))}
    path = splat_web.write_dot_splat(root / "point_cloud.splat", tensors)
    return Reader(path, byte_mutations(path.read_bytes()), lambda: splat_web.read_dot_splat(path))


def dot_spz(root: Path) -> Reader:
    """The gzip stream's bytes are mutated (most mutations fail the CRC) and so is the stream inside it."""
    import gzip

    rng = np.random.default_rng(0)
    tensors = {"means": rng.normal(size=(5, 3)), "scales": rng.normal(size=(5, 3)), "quats": rng.normal(size=(5, 4)),
               "opacities": rng.normal(size=5), "sh0": rng.normal(size=(5, 1, 3)), "shN": rng.normal(size=(5, 3, 3))}
    path = splat_spz.write_spz(root / "point_cloud.spz", tensors)
    inner = byte_mutations(gzip.decompress(path.read_bytes())).map(lambda b: gzip.compress(b, mtime=0))
    return Reader(path, st.one_of(byte_mutations(path.read_bytes()), inner), lambda: splat_spz.read_spz(path))


def points_ply(root: Path) -> Reader:
    rng = np.random.default_rng(0)
    path = ply.write_points(root / "points.ply", rng.normal(size=(6, 3)), rng.integers(0, 255, (6, 3), dtype=np.uint8))
    return Reader(path, byte_mutations(path.read_bytes()), lambda: ply.read_points(path))


def pipeline_yaml(root: Path) -> Reader:
    path = root / "p.yaml"
    valid = (HOME / "pipelines/sfm.yaml").read_text()
    path.write_text(valid)
    return Reader(path, text_mutations(valid), lambda: load_pipeline(path, {}, root))


def set_values(root: Path) -> Reader:
    """`--set` texts (the target file only carries them)."""
    path = root / "sets.txt"
    keys = st.sampled_from(["features.max_features", "match.ratio", "essential.max_error_px", "ingest.camera_model",
                            "triangulate.mapper", "check.truth", "match", "nope.x", "", "bundle_adjust.loss"])
    values = st.one_of(st.sampled_from(["", "-1", "nan", "inf", "[1,", "{a: 1}", "1e400", "PINHOL", "true", "~"]),
                       st.text(max_size=8))
    cases = st.lists(st.tuples(keys, st.sampled_from(["=", "==", ":", ""]), values).map("".join), min_size=1,
                     max_size=3).map(lambda sets: "\n".join(sets).encode())

    def read():
        return load_pipeline("sfm", parse_sets(path.read_text().split("\n")), root)

    return Reader(path, cases, read, ("--set", "sfm", "node"))


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = zlib.compress(b"\x00" * 64)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
            + struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
            + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND")))


def test_large_photos_open_quietly_and_huge_ones_are_refused_by_name(tmp_path):
    large, huge = tmp_path / "medium_format.png", tmp_path / "huge.png"
    large.write_bytes(_png_header(12_000, 9_000))  # 108 Mpx: above Pillow's warning, below its hard limit
    huge.write_bytes(_png_header(20_000, 10_000))  # 200 Mpx
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert images.image_size(large) == (12_000, 9_000)
    with pytest.raises(DataError, match=r"huge.png declares more than 179 Mpx"):
        images.image_size(huge)


def image(root: Path, suffix: str) -> Reader:
    path = root / f"a{suffix}"
    make_images(root, names=(path.name,))
    (root / "images" / path.name).rename(path)
    bombs = st.tuples(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1)).map(lambda wh: _png_header(*wh))
    cases = st.one_of(byte_mutations(path.read_bytes()), bombs) if suffix == ".png" else byte_mutations(
        path.read_bytes())

    def read():
        images.image_size(path)
        return images.read_rgb(path)

    return Reader(path, cases, read)


READERS: dict[str, Callable[[Path], Reader]] = {
    "transforms.json": transforms_json,
    "colmap cameras.bin": lambda root: colmap_model(root, True, "cameras.bin"),
    "colmap images.bin": lambda root: colmap_model(root, True, "images.bin"),
    "colmap points3D.bin": lambda root: colmap_model(root, True, "points3D.bin"),
    "colmap cameras.txt": lambda root: colmap_model(root, False, "cameras.txt"),
    "colmap images.txt": lambda root: colmap_model(root, False, "images.txt"),
    "colmap points3D.txt": lambda root: colmap_model(root, False, "points3D.txt"),
    "K.txt": k_txt,
    "COCO json": coco,
    "YOLO data yaml": lambda root: yolo(root, "yaml"),
    "YOLO labels txt": lambda root: yolo(root, "txt"),
    "labelme json": labelme,
    "VOC class png": lambda root: voc(root, "png"),
    "VOC class_names.txt": lambda root: voc(root, "class_names.txt"),
    "3DGS ply": splats,
    ".splat": dot_splat,
    ".spz": dot_spz,
    "points ply": points_ply,
    "pipeline yaml": pipeline_yaml,
    "--set values": set_values,
    "png image": lambda root: image(root, ".png"),
    "jpeg image": lambda root: image(root, ".jpg"),
}


def fuzz(reader: Reader, examples: int, derandomize: bool = True) -> int:
    """Run `examples` cases (the same ones each time when `derandomize`); returns how many ran. Fails on any
    exception but a Recon3dError naming the file."""
    ran = []

    @settings(max_examples=examples, deadline=None, database=None, derandomize=derandomize,
              suppress_health_check=list(HealthCheck))
    @given(reader.cases)
    def case(data: bytes) -> None:
        ran.append(1)
        reader.target.write_bytes(data)
        try:
            reader.read()
        except Recon3dError as exc:
            names = reader.names or (reader.target.name,)
            assert any(name in str(exc) for name in names), f"{exc} does not name {names}"

    case()
    return len(ran)


@pytest.mark.parametrize("name", list(READERS))
def test_reader_fuzzed(tmp_path, name):
    assert fuzz(READERS[name](tmp_path), 300) >= 150


@pytest.mark.slow
@pytest.mark.parametrize("name", list(READERS))
def test_reader_fuzzed_thoroughly(tmp_path, name):
    ran = fuzz(READERS[name](tmp_path), 1000, derandomize=False)  # new cases each run
    print(f"{name}: {ran} cases")
    assert ran >= 500
