"""features + match on rendered synthetic images: pixel conventions, masks, bad images, pair selection,
the brute-force reference against FLANN, and matches checked against the true epipolar geometry."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from recon3d.errors import StageError
from recon3d.geometry import epipolar
from recon3d.geometry.rotation import invert_rigid
from recon3d.scene import Camera, ImageInfo, Scene
from recon3d.sfm import retrieval
from recon3d.stages import features, match
from recon3d.stages.base import StageContext
from recon3d.synthetic import make_scene, walk

BACKENDS = ("opencv_sift", "opencv_rootsift", "pycolmap_sift")


def blob_image(x0: float, y0: float, sigma: float, width: int, height: int) -> np.ndarray:
    """(H, W) uint8: a Gaussian blob centred at (x0, y0) in COLMAP pixels (pixel (i, j) centre = (j + .5, i + .5))."""
    jj, ii = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    blob = np.exp(-((jj - x0) ** 2 + (ii - y0) ** 2) / (2 * sigma**2))
    return np.clip(np.round(60 + 150 * blob), 0, 255).astype(np.uint8)


def save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)
    return str(path)


def image_scene(paths_sizes, masks=None) -> Scene:
    """A Scene of the given (path, width, height) images, one PINHOLE camera per size."""
    infos, cameras = [], {}
    for i, (path, w, h) in enumerate(paths_sizes):
        cameras[i + 1] = Camera("PINHOLE", w, h, np.array([w * 1.2, w * 1.2, w / 2, h / 2]))
        infos.append(ImageInfo(f"im{i}.png", str(path), i + 1, w, h, mask_path=(masks or {}).get(i)))
    return Scene(images=tuple(infos), cameras=cameras)


def run_features(scene, **kw):
    ctx = StageContext.standalone("features")
    return features.run(scene, features.FeaturesConfig(**kw), ctx), ctx


def nearest(keypoints, xy):
    return keypoints[np.argmin(np.linalg.norm(keypoints - xy, axis=1))]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """Three handheld frames (320x240, PINHOLE) of the seeded world with their truth."""
    truth, _ = make_scene(tmp_path_factory.mktemp("rendered"), rig="handheld", n_images=3, n_points=200, seed=3)
    return truth


@pytest.fixture(scope="module")
def matched(rendered):
    scene = Scene(images=rendered.images, cameras=rendered.cameras, poses=rendered.poses)
    with_features, _ = run_features(scene)
    ctx = StageContext.standalone("match")
    return match.run(with_features, match.MatchConfig(), ctx), ctx


# -- the pixel convention at the OpenCV boundary ----------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("x0, y0", [(40.5, 30.5), (40.3, 30.8)])
def test_keypoint_sits_on_the_blob_centre_in_colmap_pixels(tmp_path, backend, x0, y0):
    """A blob centred at (x0, y0) gives a keypoint there: OpenCV's (0, 0) convention is shifted by 0.5 and
    its first-octave upscale bias (+0.25 px without enable_precise_upscale) is gone."""
    path = save(tmp_path / "blob.png", blob_image(x0, y0, 3.0, 96, 80))
    out, _ = run_features(image_scene([(path, 96, 80)]), backend=backend)
    kp = out.features["im0.png"].keypoints
    assert kp.dtype == np.float32 and kp.shape[1] == 2
    assert np.abs(nearest(kp, (x0, y0)) - (x0, y0)).max() < 0.05


@pytest.mark.parametrize("backend", ["opencv_rootsift", "pycolmap_sift"])
def test_downscaled_extraction_maps_back_to_full_size_pixels(tmp_path, backend):
    x0, y0 = 161.2, 123.2
    path = save(tmp_path / "blob.png", blob_image(x0, y0, 12.0, 384, 320))
    out, ctx = run_features(image_scene([(path, 384, 320)]), backend=backend, max_image_size=96)
    assert ctx.counts["downscaled_images"] == 1
    # a 4x downscale done with OpenCV's pixel-centre mapping would be off by 1.5 px
    assert np.abs(nearest(out.features["im0.png"].keypoints, (x0, y0)) - (x0, y0)).max() < 0.15


# -- images of every kind, and bad ones ------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["opencv_rootsift", "pycolmap_sift"])
def test_grey_rgba_masked_textureless_and_broken_images(tmp_path, rendered, backend):
    rgb = np.asarray(Image.open(rendered.images[0].path).convert("RGB"))
    h, w = rgb.shape[:2]
    grey = save(tmp_path / "grey.png", rgb.mean(axis=2).astype(np.uint8), "L")
    rgba = np.dstack([rgb, np.full((h, w), 255, np.uint8)])
    rgba[:, : w // 2, 3] = 0  # left half transparent
    rgba_path = save(tmp_path / "rgba.png", rgba, "RGBA")
    masked = save(tmp_path / "masked.png", rgb)
    mask = np.zeros((h, w), np.uint8)
    mask[h // 2:] = 255  # keep the bottom half
    mask_path = save(tmp_path / "mask.png", mask, "L")
    flat = save(tmp_path / "flat.png", np.full((h, w, 3), 90, np.uint8))
    small = save(tmp_path / "small.png", rgb[::2, ::2].copy())  # mixed sizes: a half-size image
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    wrong_mask = save(tmp_path / "wrong_mask.png", mask[::2], "L")
    scene = image_scene([(grey, w, h), (rgba_path, w, h), (masked, w, h), (flat, w, h), (small, w // 2, h // 2),
                         (str(broken), w, h), (masked, w, h)], masks={2: mask_path, 6: wrong_mask})
    out, ctx = run_features(scene, backend=backend)
    kp = {n: f.keypoints for n, f in out.features.items()}
    assert len(kp["im0.png"]) > 100  # grey
    assert len(kp["im1.png"]) > 30 and np.all(kp["im1.png"][:, 0] >= w // 2 - 1)  # nothing where alpha = 0
    assert len(kp["im2.png"]) > 30 and np.all(kp["im2.png"][:, 1] >= h // 2)  # masked rows dropped
    assert len(kp["im3.png"]) == 0 and out.features["im3.png"].descriptors.shape == (0, 128)
    assert len(kp["im4.png"]) > 30 and np.all(kp["im4.png"] <= (w // 2, h // 2))
    assert "im5.png" not in out.features and "im6.png" not in out.features
    reasons = {d["item"]: d["reason"] for d in ctx.dropped}
    assert "no keypoints" in reasons["im3.png"]
    assert "broken.png" in reasons["im5.png"]
    assert "wrong_mask.png" in reasons["im6.png"]
    assert ctx.counts["keypoints_per_image"]["im3.png"] == 0
    for f in out.features.values():
        assert f.descriptors.dtype == np.uint8 and len(f.descriptors) == len(f.keypoints)


def test_descriptors_come_back_as_maps_of_files_already_removed(rendered, tmp_path):
    """Each extraction task writes its descriptors to a file of the node's folder; the stage maps the file and
    removes its name, so the descriptors live in the page cache, not the process's memory, and leave no
    second copy on disk once the scene is saved. The arrays are those an in-process extraction returns."""
    out, ctx = run_features(rendered.replace(features={}), backend="opencv_rootsift")
    assert list((ctx.workdir / "descriptors").iterdir()) == []
    im = rendered.images[0]
    direct = features.extract_image(features.ExtractTask(im.name, im.path, im.mask_path, im.width, im.height,
                                                         features.FeaturesConfig(backend="opencv_rootsift"),
                                                         str(tmp_path / "direct.npy")))
    mapped = out.features[im.name].descriptors
    base = mapped
    while base.base is not None and not isinstance(base, np.memmap):
        base = base.base
    assert isinstance(base, np.memmap) and not mapped.flags.writeable
    np.testing.assert_array_equal(mapped, np.load(tmp_path / "direct.npy"))
    np.testing.assert_array_equal(out.features[im.name].keypoints, direct.keypoints)


def test_no_keypoints_anywhere_is_an_error(tmp_path):
    flat = save(tmp_path / "flat.png", np.full((60, 80, 3), 90, np.uint8))
    with pytest.raises(StageError, match="no keypoints in any"):
        run_features(image_scene([(flat, 80, 60)]))


def test_max_keypoints_and_config_validation(rendered):
    scene = Scene(images=rendered.images[:1], cameras=rendered.cameras)
    for backend in ("opencv_sift", "pycolmap_sift"):
        out, _ = run_features(scene, backend=backend, max_keypoints=50)
        kp = out.features[rendered.images[0].name].keypoints
        locations = len(np.unique(kp, axis=0))  # each location with its orientations; COLMAP's cap is approximate
        assert (locations == 50 if backend == "opencv_sift" else 40 <= locations <= 60) and len(kp) <= 2 * locations
    with pytest.raises(ValidationError, match="opencv_rootsift"):
        features.FeaturesConfig(backend="orb")
    with pytest.raises(ValidationError, match="'brute_force', 'flann' or 'pycolmap'"):
        match.MatchConfig(matcher="lightglue")
    with pytest.raises(ValidationError, match="exhaustive"):
        match.MatchConfig(pairs="vocab_tree")


# -- matching ---------------------------------------------------------------------------------------------

def test_photos_that_share_nothing_are_one_line_with_labels_pointing_to_the_labels_pipeline(tmp_path):
    from recon3d.scene import Labels

    rng = np.random.default_rng(0)
    paths = [save(tmp_path / f"{i}.png", rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)) for i in range(2)]
    scene, _ = run_features(image_scene([(p, 160, 120) for p in paths]))
    with pytest.raises(StageError, match="no image pair has min_matches 15") as plain:
        match.run(scene, match.MatchConfig())
    assert "recon3d run labels" not in str(plain.value)
    labeled = scene.replace(labels={"im0.png": Labels(np.array([[1.0, 1, 9, 9]]), np.array([0], np.int32))},
                            class_names=("cat",))
    with pytest.raises(StageError, match="recon3d run labels. detects and segments them alone"):
        match.run(labeled, match.MatchConfig())

def test_matches_obey_the_true_epipolar_geometry(rendered, matched):
    scene, ctx = matched
    assert ctx.counts["pairs_kept"] == 3 and ctx.counts["matches_total"] > 300
    camera = rendered.cameras[1]
    for (a, b), m in scene.matches.items():
        assert m.dtype == np.int32 and m.shape[1] == 2 and len(np.unique(m[:, 1])) == len(m)  # mutual: one-to-one
        cam2_from_cam1 = rendered.poses[b] @ invert_rigid(rendered.poses[a])
        F = epipolar.fundamental_from_essential(epipolar.essential_from_pose(cam2_from_cam1), camera.K,  # noqa: N806
                                                camera.K)
        x1 = scene.features[a].keypoints[m[:, 0]]
        x2 = scene.features[b].keypoints[m[:, 1]]
        d2, _ = epipolar.epipolar_distances(F, x1, x2)
        assert np.median(d2) < 0.2, (a, b, np.median(d2))
        assert np.mean(d2 < 2.0) > 0.9, (a, b, np.mean(d2 < 2.0))
    assert ctx.counts["match_graph_svg"].endswith("match_graph.svg")
    assert Path(ctx.counts["match_graph_svg"]).stat().st_size > 1000


def test_pycolmap_features_match_too(rendered):
    scene = Scene(images=rendered.images[:2], cameras=rendered.cameras)
    out, _ = run_features(scene, backend="pycolmap_sift")
    matched = match.run(out, match.MatchConfig())
    assert len(next(iter(matched.matches.values()))) > 100


def test_spatial_pairs_of_photos_without_poses_are_refused_with_what_to_use(matched):
    """Photos without poses have no positions to pair by: said, with the pairings that use their content."""
    scene, _ = matched
    unposed = scene.replace(poses={}, matches={})
    with pytest.raises(StageError, match=r"pairs=spatial .* 3 of the 3 images have no pose .* --set match.pairs=auto"):
        match.run(unposed, match.MatchConfig(pairs="spatial"))


def test_flann_agrees_with_the_brute_force_reference(matched):
    scene, _ = matched
    (a, b), reference = next(iter(scene.matches.items()))
    d1 = match.unit_descriptors(scene.features[a].descriptors)
    d2 = match.unit_descriptors(scene.features[b].descriptors)
    np.testing.assert_array_equal(match.match_descriptors(d1, d2, chunk=97), reference)  # chunking is exact
    approx = match.match_flann(d1, d2)
    common = len({tuple(r) for r in reference} & {tuple(r) for r in approx})
    assert common >= 0.9 * len(reference) and len(approx) <= 1.1 * len(reference)
    np.testing.assert_array_equal(match.match_flann(d1, d2), approx)  # repeatable


def test_pycolmap_matcher_against_the_reference(matched):
    """COLMAP's matcher applies the ratio test both ways (1 -> 2 and 2 -> 1) and on descriptor angles: against
    the reference with the same two-way rule it finds the same matches up to a few near-ties."""
    scene, _ = matched
    pairs = list(scene.matches)
    found = match.match_pycolmap(pairs, {n: f.descriptors for n, f in scene.features.items()})
    for (a, b), got in zip(pairs, found, strict=True):
        d1, d2 = (match.unit_descriptors(scene.features[n].descriptors) for n in (a, b))
        forward, backward = match.match_descriptors(d1, d2), match.match_descriptors(d2, d1)
        two_way = {tuple(r) for r in forward} & {(j, i) for i, j in backward}
        got_set = {tuple(r) for r in got}
        assert got.dtype == np.int32 and np.all(np.diff(got[:, 0]) > 0)
        assert len(got_set & two_way) >= 0.95 * len(two_way), (len(got_set & two_way), len(two_way))
        assert len(got_set & two_way) >= 0.95 * len(got_set)
    a, b = pairs[0]
    descriptors = {n: f.descriptors for n, f in scene.features.items()}
    # on one thread COLMAP's FAISS search repeats exactly (on several, a few near-ties follow the threads' timing)
    first = match.match_pycolmap([(a, b)], descriptors, num_threads=1)[0]
    swapped = match.match_pycolmap([(b, a)], descriptors, num_threads=1)[0]
    assert {tuple(r) for r in swapped} == {(j, i) for i, j in first}  # the pair's order is the caller's


def test_pycolmap_matcher_in_the_stage_does_not_depend_on_blocks(matched):
    scene, _ = matched
    unmatched = scene.replace(matches={})
    one = match.run(unmatched, match.MatchConfig(matcher="pycolmap", num_threads=1))
    each = match.run(unmatched, match.MatchConfig(matcher="pycolmap", num_threads=1, pairs_per_task=1))
    assert one.matches.keys() == each.matches.keys() == scene.matches.keys()
    for pair in one.matches:
        np.testing.assert_array_equal(one.matches[pair], each.matches[pair])


def test_strongest_locations_keep_every_orientation():
    xy = np.array([[1, 1], [2, 2], [1, 1], [3, 3], [2, 2]], dtype=float)
    response = np.array([5.0, 4.0, 5.0, 9.0, 4.0])
    assert features.strongest_locations(xy, response, 2).tolist() == [3, 0, 2]
    assert sorted(features.strongest_locations(xy, response, 10).tolist()) == [0, 1, 2, 3, 4]


def test_match_descriptors_against_a_loop():
    rng = np.random.default_rng(0)
    d1 = match.unit_descriptors(rng.normal(size=(40, 8)))
    d2 = match.unit_descriptors(np.vstack([d1[:25] + rng.normal(0, 0.1, (25, 8)), rng.normal(size=(10, 8))]))
    for ratio, mutual, max_distance in [(0.8, True, 0.0), (1.0, False, 0.0), (0.9, True, 0.5)]:
        expected = []
        for i in range(len(d1)):
            dist = np.linalg.norm(d2 - d1[i], axis=1)
            j, (first, second) = int(np.argmin(dist)), np.sort(dist)[:2]
            ok = (ratio >= 1.0 or first < ratio * second) and (max_distance == 0 or first <= max_distance)
            if mutual:
                ok &= int(np.argmin(np.linalg.norm(d1 - d2[j], axis=1))) == i
            if ok:
                expected.append((i, j))
        got = match.match_descriptors(d1, d2, ratio, mutual, max_distance, chunk=7)
        assert [tuple(r) for r in got] == expected
    assert match.match_descriptors(d1, d2[:1]).shape[1] == 2  # one candidate: the ratio test passes
    assert match.match_descriptors(d1[:0], d2).shape == (0, 2)


def test_pair_selection():
    names = [f"{i}" for i in range(6)]
    assert len(match.select_pairs(names, match.MatchConfig())) == 15
    seq = match.select_pairs(names, match.MatchConfig(pairs="sequential", window=2, quadratic_overlap=False))
    assert seq == [("0", "1"), ("0", "2"), ("1", "2"), ("1", "3"), ("2", "3"), ("2", "4"), ("3", "4"), ("3", "5"),
                   ("4", "5")]
    quadratic = match.select_pairs(names, match.MatchConfig(pairs="sequential", window=2))
    assert sorted(set(quadratic) - set(seq)) == [("0", "4"), ("1", "5")]  # i + 4: the next power of two
    many = [f"{i:03d}" for i in range(1000)]
    assert len(match.select_pairs(many, match.MatchConfig(pairs="sequential"))) < 1000 * (5 + 10)  # O(N log N)
    centers = {n: np.array([float(n) ** 2, 0.0, 0.0]) for n in names if n != "3"}  # "3" has no pose
    spatial = match.select_pairs(names, match.MatchConfig(pairs="spatial", spatial_k=1), centers)
    assert spatial == [("0", "1"), ("1", "2"), ("4", "5")]  # centres at x = 0, 1, 4, 16, 25
    assert match.select_pairs(names, match.MatchConfig(pairs="spatial"), {}) == []
    # retrieval: each image with its k most alike (cosine of unit vectors), plus its window in capture order
    angles = np.radians([0, 10, 90, 95, 180, 185])
    vectors = np.column_stack([np.cos(angles), np.sin(angles)])
    alike = match.select_pairs(names, match.MatchConfig(pairs="retrieval", retrieval_k=1, retrieval_window=0,
                                                        retrieval_expand=0), mode="retrieval", vectors=vectors)
    assert alike == [("0", "1"), ("2", "3"), ("4", "5")]
    windowed = match.select_pairs(names, match.MatchConfig(pairs="retrieval", retrieval_k=1, retrieval_window=1,
                                                           retrieval_expand=0), mode="retrieval", vectors=vectors)
    assert windowed == [(a, str(int(a) + 1)) for a in names[:-1]]
    every = match.select_pairs(names, match.MatchConfig(pairs="retrieval", retrieval_k=50), mode="retrieval",
                               vectors=vectors)
    assert len(every) == 15  # k beyond the image count: every pair
    with pytest.raises(ValueError, match="one global descriptor per image"):
        match.select_pairs(names, match.MatchConfig(pairs="retrieval"), mode="retrieval", vectors=vectors[:3])


def test_query_expansion_averages_each_image_with_its_most_alike():
    """alpha-QE: row i becomes the unit sum of itself and its n most similar rows, weighted by cosine^alpha
    (negative cosines count as 0); n = 0 leaves the vectors as they are."""
    angles = np.radians([0, 30, 100, 200])
    vectors = np.column_stack([np.cos(angles), np.sin(angles)])
    assert retrieval.expand_queries(vectors, 0) is vectors
    out = retrieval.expand_queries(vectors, 1, alpha=3.0)
    expected = vectors[0] + np.cos(np.radians(30)) ** 3 * vectors[1]  # row 0 and its nearest, row 1
    np.testing.assert_allclose(out[0], expected / np.linalg.norm(expected))
    expected = vectors[3] + 0.0 * vectors[2]  # row 3's nearest (row 2, 100 degrees away) has a negative cosine
    np.testing.assert_allclose(out[3], expected)
    np.testing.assert_allclose(np.linalg.norm(retrieval.expand_queries(vectors, 10), axis=1), 1.0)


def test_vlad_scores_shared_content_above_unrelated():
    """Two images of the same points (their descriptors, re-observed with noise) score far above two images of
    other points."""
    rng = np.random.default_rng(0)
    world = match.unit_descriptors(rng.normal(size=(800, 16)).astype(np.float32))

    def image(points):
        return world[points] + rng.normal(0, 0.02, (len(points), 16)).astype(np.float32)

    images = [image(np.arange(0, 300)), image(np.arange(20, 320)), image(np.arange(400, 700)),
              image(np.arange(430, 730))]
    codebook = retrieval.train_codebook(iter(images), len(images), k=8, sample=1600)
    assert codebook.shape == (8, 16)
    np.testing.assert_array_equal(codebook, retrieval.train_codebook(iter(images), len(images), k=8, sample=1600))
    vectors = np.stack([retrieval.vlad(d, codebook) for d in images])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    sim = vectors @ vectors.T
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[2, 3] > sim[1, 3] + 0.3
    assert retrieval.nearest_pairs(vectors, 1) == {(0, 1), (2, 3)}
    assert not retrieval.vlad(np.zeros((0, 16), np.float32), codebook).any()
    with pytest.raises(ValueError, match="cannot make a codebook"):
        retrieval.train_codebook(iter(images[:1]), 1, k=8, sample=4)


def observed(tracks: dict[int, dict[int, tuple[float, float]]], n: int, tried: list[tuple[int, int]]):
    """Keypoints and matches of `n` images from tracks (track -> image -> where the image sees it): image i's
    keypoint k is the k-th track it sees; each tried pair is matched on every track both images see."""
    index = [{t: k for k, t in enumerate(t for t in sorted(tracks) if i in tracks[t])} for i in range(n)]
    keypoints = [np.array([tracks[t][i] for t in index[i]], dtype=np.float64).reshape(-1, 2) for i in range(n)]
    matches = {(a, b): np.array([[index[a][t], index[b][t]] for t in index[a] if t in index[b]]).reshape(-1, 2)
               for a, b in tried}
    return keypoints, matches


QUADRANTS = ((25, 25), (75, 25), (25, 75), (75, 75))  # 100x100 px images cut into 2x2 cells


def test_covisible_pairs_rank_by_the_area_one_image_sees_of_the_other():
    """100x100 px images in 2x2 cells, hub 4 matched with images 0-3. 0 and 1 share four tracks, one in each of
    their cells; 2 and 3 ten, all in their top-left cell (2 holds tracks in two cells, 3 in four: shares 1/2 and
    1/4); 0 and 2 one, in 0's top-left and 2's bottom-right (1/4, 1/2); 1 and 3 three, in 1's top-left and 3's
    other three cells (1/4, 3/4). Ranked by the larger share: (0, 1) 1, (1, 3) 3/4, then (0, 2) and (2, 3) 1/2
    by index — the ten tracks bunched in one corner count for no more than the one; (0, 3) and (1, 2) share
    nothing and are not proposed; tried pairs neither; at most `count`."""
    tracks = {t: {0: QUADRANTS[t], 1: QUADRANTS[t], 4: (50, 50)} for t in range(4)}
    tracks |= {4 + t: {2: (10 + t, 10), 3: (10 + t, 10), 4: (50, 50)} for t in range(10)}
    tracks[14] = {0: (10, 10), 2: (90, 90), 4: (50, 50)}
    tracks |= {15 + t: {1: (10 + t, 10), 3: QUADRANTS[1 + t], 4: (50, 50)} for t in range(3)}
    tried = [(i, 4) for i in range(4)]
    keypoints, matches = observed(tracks, 5, tried)
    sizes = [(100, 100)] * 5

    def covisible(tried, count):
        return retrieval.covisible_pairs(keypoints, sizes, matches, tried, count, cells=2)

    assert covisible(tried, 10) == [(0, 1), (1, 3), (0, 2), (2, 3)]
    assert covisible(tried, 2) == [(0, 1), (1, 3)]
    assert covisible(tried + [(0, 1)], 1) == [(1, 3)]
    assert covisible(tried, 0) == [] == retrieval.covisible_pairs(keypoints, sizes, {}, [], 3)


def test_covisible_pairs_cut_cells_square_along_the_longer_side():
    """A 200x100 px image in square cells of 100 px (two along its longer side, one across) beside 100x100 px
    images in cells of 50 px: each image's cells are its own."""
    tracks = {0: {0: (50, 50), 1: (10, 10), 2: (10, 10)}, 1: {0: (150, 50), 1: (60, 10), 2: (60, 10)},
              2: {1: (10, 60), 2: (10, 60), 3: (10, 60)}}
    tried = [(0, 1), (1, 2), (2, 3)]
    keypoints, matches = observed(tracks, 4, tried)
    sizes = [(200, 100), (100, 100), (100, 100), (100, 100)]
    # 0 with 2: both of 0's cells (two of 2's three); 1 with 3: one of 1's three cells, and 3's only one
    assert retrieval.covisible_pairs(keypoints, sizes, matches, tried, 10, cells=2) == [(0, 2), (1, 3)]
    assert retrieval._cells(np.array([0, 0]), np.array([0, 1]), keypoints, sizes, 2).tolist() == [0, 1]


def test_covisible_pairs_leave_out_tracks_that_hold_two_features_of_one_image():
    """Images 0, 1 and 2 share five tracks. Image 0's feature 10 is matched with 3's feature 0, that with 4's
    feature 0, that with 2's feature 10, and that with 3's feature 1: one track through 0, 2 and 4 and twice
    through 3 (a wrong match on the way). It is no evidence that 0 sees what 4 sees: only (0, 2) is proposed
    (with that track counted, (0, 4) would be too: it is all of 4's one track)."""
    five, one = np.c_[np.arange(5), np.arange(5)], np.array([[0, 0]])
    matches = {(0, 1): five, (1, 2): five, (0, 3): np.array([[10, 0]]), (3, 4): one, (2, 4): np.array([[10, 0]]),
               (2, 3): np.array([[10, 1]])}
    keypoints = [np.full((20, 2), 10.0)] * 5
    assert retrieval.covisible_pairs(keypoints, [(100, 100)] * 5, matches, list(matches), 10) == [(0, 2)]


def test_covisible_pairs_share_counts_only_tracks_of_three_or_more_views():
    """0 and 1 share ten tracks through 2, in their top-left cell, and each has 90 more of two views (with 3,
    with 4) in its other cells: one tried pair's matches, which no untried pair can share. 5 and 6 share ten
    through 7, 6 and 9 ten through 8. Over the tracks of three or more views, 0 and 1 share all of their area
    and rank with the others, first by index; counting the two-view tracks would put them last (a quarter)."""
    def link(first, second, n):
        return np.c_[np.arange(first, first + n), np.arange(second, second + n)]

    ten = link(0, 0, 10)
    matches = {(0, 2): ten, (1, 2): ten, (0, 3): link(10, 0, 90), (1, 4): link(10, 0, 90),
               (5, 7): ten, (6, 7): ten, (6, 8): link(10, 0, 10), (8, 9): ten}
    spread = np.array([(10, 10)] * 10 + [QUADRANTS[1 + k % 3] for k in range(90)], dtype=np.float64)
    keypoints = [spread] * 10
    assert retrieval.covisible_pairs(keypoints, [(100, 100)] * 10, matches, list(matches), 10,
                                     cells=2) == [(0, 1), (5, 6), (6, 9)]


def test_covisible_pairs_follow_tracks_beyond_one_hop():
    """A chain 0-1-2-3 along the same three features: (0, 3) shares them through two images between them (no
    third image is matched with both, one hop would not find it). Twenty tracks run through 4, 5 and 6, in
    their top-left cells, and each of 4 and 6 has forty more through two others (8 and 10, 7 and 9) in its other
    three cells: (4, 6) shares a quarter of each one's area and ranks after the chain's pairs and the pairs of
    those two-hop tracks, which share all of theirs."""
    def link(first, second, n):  # features first.. of one image matched with second.. of the other
        return np.c_[np.arange(first, first + n), np.arange(second, second + n)]

    three, twenty, forty = link(0, 0, 3), link(0, 0, 20), link(0, 0, 40)
    matches = {(0, 1): three, (1, 2): three, (2, 3): three, (4, 5): twenty, (5, 6): twenty,
               (6, 7): link(20, 0, 40), (7, 9): forty, (4, 8): link(20, 0, 40), (8, 10): forty}
    spread = np.array([(10, 10)] * 20 + [QUADRANTS[1 + k % 3] for k in range(40)], dtype=np.float64)
    keypoints = [spread] * 11
    assert retrieval.covisible_pairs(keypoints, [(100, 100)] * 11, matches, list(matches), 10,
                                     cells=2) == [(0, 2), (0, 3), (1, 3), (4, 10), (6, 9), (4, 6)]


def test_retrieval_finds_the_overlapping_pairs_of_a_street_walk(tmp_path):
    """40 frames, 0.5 m apart, out along a synthetic street and back: auto pairing switches to retrieval above
    its threshold and picks a third of the pairs, which hold far more of the truly overlapping pairs than a
    third (measured: 73 % of the pairs overlapping by half, 82 % of those overlapping by 70 %); two rounds of the
    pairs sharing the largest share of feature tracks then add 40 pairs each (10 % of the pairs) and reach 91 % and
    97 %."""
    truth, depths = walk.write_walk(tmp_path / "walk", 40, step=0.5)
    shares = walk.overlap_shares(truth, depths)
    assert np.allclose(shares, shares.T) and 0.2 < np.mean(shares >= 0.5) < 0.6
    scene, _ = run_features(Scene(images=truth.images, cameras=truth.cameras), backend="pycolmap_sift")
    index = {im.name: i for i, im in enumerate(truth.images)}
    overlap = {share: {(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(shares >= share, 1)), strict=True)}
               for share in (0.5, 0.7)}
    recalls = []
    for rounds in (0, 2):
        ctx = StageContext.standalone("match")
        cfg = match.MatchConfig(auto_retrieval_above=30, retrieval_k=10, retrieval_rounds=rounds, matcher="pycolmap")
        matched = match.run(scene, cfg, ctx)
        assert ctx.counts["pairing"] == "retrieval" and ctx.counts["retrieval_words"] == 256
        picked = ctx.counts["pairs_candidate"] / 780
        assert picked < 0.35 + 0.1 * rounds / 2
        assert ctx.counts["covisible_rounds"] == rounds and ctx.counts["pairs_covisible"] == 40 * rounds
        assert ctx.counts["pairs_kept"] + ctx.counts["pairs_dropped"] == ctx.counts["pairs_candidate"]
        kept = {(index[a], index[b]) for a, b in matched.matches}
        recalls.append([len(kept & overlap[share]) / len(overlap[share]) for share in (0.5, 0.7)])
        for recall, least in zip(recalls[-1], (0.6, 0.7), strict=True):
            assert recall >= least and recall >= 1.8 * picked, (recall, picked)
    assert recalls[1][0] > recalls[0][0] + 0.1 and recalls[1][1] > recalls[0][1] + 0.1, recalls
    assert walk.overlapping_pairs(truth, depths, min_share=0.5) == overlap[0.5]


def test_match_graph_draws_every_counted_pair_in_both_halves(tmp_path):
    """The SVG matrix: a cell per counted pair above the diagonal (upper counts) and below it (lower counts),
    each naming its pair and count on hover, coloured by count (viridis: the top count is yellow)."""
    import xml.etree.ElementTree as ET

    from recon3d.report.match_graph import viridis, write_match_graph

    names = ["a.jpg", "b.jpg", "c<&>.jpg"]
    path = write_match_graph(tmp_path / "g.svg", names, {("a.jpg", "b.jpg"): 40, ("b.jpg", "c<&>.jpg"): 10},
                             lower={("a.jpg", "b.jpg"): 90}, upper_label="inliers", lower_label="matches")
    root = ET.parse(path).getroot()  # well-formed XML: the odd name is escaped
    ns = "{http://www.w3.org/2000/svg}"
    cells = {r.find(f"{ns}title").text: r.get("fill") for r in root.iter(f"{ns}rect") if r.find(f"{ns}title")
             is not None}
    assert cells == {"a.jpg | b.jpg: 40 inliers": viridis(np.array([40 / 90]))[0],
                     "b.jpg | c<&>.jpg: 10 inliers": viridis(np.array([10 / 90]))[0],
                     "a.jpg | b.jpg: 90 matches": "#fde725"}
    assert viridis(np.array([0.0, 0.5, 1.0, 2.0])) == ["#440154", "#21918c", "#fde725", "#fde725"]
    texts = [t.text for t in root.iter(f"{ns}text")]
    assert texts.count("c<&>.jpg") == 2 and "upper: inliers" in texts and "lower: matches" in texts
