"""The incremental mapper (recon3d's reference): initial pair, then register-by-PnP and triangulate.

1. The caller picks the connected component of the match graph to reconstruct.
2. Initial pair: the pair with the most verified matches whose relative pose (the calibrated two-view pose,
   or an essential matrix estimated here on the shared tracks, as for homography pairs, whose decomposed
   pose is too coarse to build on) triangulates enough points with a wide enough angle.
3. Repeatedly: register the unregistered image that sees the most triangulated tracks (PnP + RANSAC on
   undistorted coordinates, refined by Levenberg-Marquardt), triangulate the tracks it completes (DLT with
   cheirality, reprojection and angle checks), then a local bundle adjustment (the new image and the six
   registered images sharing most points with it; the rest held), or a global one whenever the model has
   grown by a fifth. Images that fail are retried after the next success.
All geometry is float64; pixels follow COLMAP's convention; poses are cam_from_world.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from recon3d.errors import DataError
from recon3d.geometry import bundle, camera_models, epipolar
from recon3d.geometry.rotation import rigid
from recon3d.geometry.triangulation import max_triangulation_angle_deg, triangulate_dlt
from recon3d.io import images
from recon3d.scene import Points, Scene
from recon3d.sfm.tracks import Tracks


@dataclass(frozen=True)
class MapperOptions:
    min_init_points: int = 50
    min_init_angle_deg: float = 3.0  # median triangulation angle of the initial pair
    min_angle_deg: float = 1.5  # a new point needs rays at least this far apart
    max_reprojection_px: float = 2.0
    min_pnp_inliers: int = 10
    min_pnp_inlier_ratio: float = 0.25  # and this share of the points it sees (COLMAP's abs_pose_min_inlier_ratio)
    ba_growth: float = 1.2  # global BA when the registered count grew by this factor
    ba_iterations: int = 10  # per intermediate global BA (SciPy residual evaluations)
    final_ba_iterations: int = 50
    local_ba_images: int = 6  # neighbours that move with a newly registered image in its local BA


@dataclass
class MapperState:
    registered: dict[int, np.ndarray] = field(default_factory=dict)  # image index -> cam_from_world
    xyz: np.ndarray | None = None  # (T, 3) NaN where not triangulated
    used: np.ndarray | None = None  # (E,) which track elements are observations of the model
    failures: dict[int, str] = field(default_factory=dict)


class Mapper:
    def __init__(self, scene: Scene, tracks: Tracks, options: MapperOptions):
        self.scene, self.tracks, self.opt = scene, tracks, options
        self.cams = [scene.cameras[im.camera_id] for im in scene.images]
        self.camera_id = np.array([im.camera_id for im in scene.images], dtype=np.int64)
        # undistorted normalised coordinates and pixels of every track element
        self.px = np.zeros((len(tracks.image), 2))
        self.uv = np.zeros((len(tracks.image), 2))
        for i, im in enumerate(scene.images):
            sel = tracks.image == i
            if sel.any():
                self.px[sel] = scene.features[im.name].keypoints[tracks.keypoint[sel]]
                self.uv[sel] = camera_models.unproject(self.cams[i].model, self.cams[i].params, self.px[sel])
        self.track_of = np.repeat(np.arange(len(tracks)), tracks.lengths())
        self.state = MapperState(xyz=np.full((len(tracks), 3), np.nan), used=np.zeros(len(tracks.image), bool))

    # -- the initial pair ----------------------------------------------------------------------------------

    def initialize(self, pairs: list[tuple[int, int, np.ndarray | None]]) -> bool:
        """Try pairs (a, b, cam_b_from_cam_a or None) in order; keep the first that triangulates well."""
        for a, b, relative in pairs:
            shared = self._shared_tracks(a, b)
            if len(shared) < self.opt.min_init_points:
                continue
            ea, eb = self._element(shared, a), self._element(shared, b)
            if relative is None:
                relative = self._relative_pose(self.uv[ea], self.uv[eb], a)
                if relative is None:
                    continue
            self.state.registered = {a: np.eye(4), b: relative}
            self._triangulate(shared)
            ok = np.isfinite(self.state.xyz[shared, 0])
            angles = self._angles(shared[ok])
            if ok.sum() >= self.opt.min_init_points and np.median(angles) >= self.opt.min_init_angle_deg:
                return True
            self.state = MapperState(xyz=np.full((len(self.tracks), 3), np.nan),
                                     used=np.zeros(len(self.tracks.image), bool))
        return False

    def _relative_pose(self, uv_a: np.ndarray, uv_b: np.ndarray, a: int) -> np.ndarray | None:
        e, mask = cv2.findEssentialMat(uv_a, uv_b, np.eye(3), method=cv2.USAC_MAGSAC, prob=0.9999,
                                       threshold=self.opt.max_reprojection_px / self._focal(a) / 2)
        if e is None or e.shape != (3, 3):
            return None
        inliers = mask.ravel().astype(bool)
        return epipolar.pose_from_essential(e, uv_a[inliers], uv_b[inliers])[0]

    def _focal(self, i: int) -> float:
        """Mean focal length of image i's camera, px: turns pixel thresholds into normalised ones."""
        return float(np.mean(camera_models.split_params(self.cams[i].model, self.cams[i].params)[0]))

    # -- registration ---------------------------------------------------------------------------------------

    def next_images(self, component: np.ndarray) -> list[int]:
        """Unregistered images of the component, most triangulated tracks seen first."""
        tri = np.isfinite(self.state.xyz[self.track_of, 0])
        counts = np.bincount(self.tracks.image[tri], minlength=len(self.scene.images))
        todo = [int(i) for i in component if i not in self.state.registered and counts[i] > 0]
        return sorted(todo, key=lambda i: -counts[i])

    def register(self, i: int) -> bool:
        sel = np.flatnonzero((self.tracks.image == i) & np.isfinite(self.state.xyz[self.track_of, 0]))
        if len(sel) < self.opt.min_pnp_inliers:
            self.state.failures[i] = f"sees {len(sel)} triangulated points (< {self.opt.min_pnp_inliers})"
            return False
        obj, uv = self.state.xyz[self.track_of[sel]], self.uv[sel]
        ok, rvec, tvec, inliers = cv2.solvePnPRansac(obj, uv, np.eye(3), None, iterationsCount=2000,
                                                     reprojectionError=self.opt.max_reprojection_px / self._focal(i),
                                                     confidence=0.9999, flags=cv2.SOLVEPNP_SQPNP)
        n_in = 0 if inliers is None else len(inliers)
        if not ok or n_in < max(self.opt.min_pnp_inliers, self.opt.min_pnp_inlier_ratio * len(sel)):
            self.state.failures[i] = (f"PnP found {n_in} inliers among {len(sel)} (needs {self.opt.min_pnp_inliers} "
                                      f"and {self.opt.min_pnp_inlier_ratio:.0%})")
            return False
        inl = inliers.ravel()
        rvec, tvec = cv2.solvePnPRefineLM(obj[inl], uv[inl], np.eye(3), None, rvec, tvec)
        self.state.registered[i] = rigid(cv2.Rodrigues(rvec)[0], tvec.ravel())
        self.state.failures.pop(i, None)
        self.state.used[sel[inl]] = True
        self._triangulate(np.unique(self.track_of[self.tracks.image == i]))
        return True

    # -- triangulation ----------------------------------------------------------------------------------------

    def triangulate_from(self, poses: dict[int, np.ndarray]) -> None:
        """COLMAP's point_triangulator: every track seen by two posed images triangulated from `poses` (image
        index -> cam_from_world), which are held as they are (the same DLT and checks as while mapping)."""
        self.state = MapperState(registered=dict(poses), xyz=np.full((len(self.tracks), 3), np.nan),
                                 used=np.zeros(len(self.tracks.image), bool))
        self._triangulate(np.arange(len(self.tracks)))

    def _shared_tracks(self, a: int, b: int) -> np.ndarray:
        ta = set(self.track_of[self.tracks.image == a].tolist())
        return np.array(sorted(ta & set(self.track_of[self.tracks.image == b].tolist())), dtype=np.int64)

    def _element(self, tracks: np.ndarray, image: int) -> np.ndarray:
        elements = np.flatnonzero(self.tracks.image == image)
        lookup = dict(zip(self.track_of[elements].tolist(), elements.tolist(), strict=True))
        return np.array([lookup[t] for t in tracks.tolist()], dtype=np.int64)

    def _triangulate(self, candidates: np.ndarray) -> None:
        """(Re)triangulate the candidate tracks that are not yet points, from all their registered views."""
        todo = np.asarray(candidates, dtype=np.int64)
        todo = todo[~np.isfinite(self.state.xyz[todo, 0])]
        reg = np.zeros(len(self.scene.images), bool)
        reg[list(self.state.registered)] = True
        # the registered elements of each todo track, as a padded (n, k) table
        starts, lengths = self.tracks.offsets[todo], self.tracks.lengths()[todo]
        row = np.repeat(np.arange(len(todo)), lengths)
        elem = np.repeat(starts - np.r_[0, np.cumsum(lengths)[:-1]], lengths) + np.arange(lengths.sum())
        keep = reg[self.tracks.image[elem]]
        row, elem = row[keep], elem[keep]
        if not len(elem):
            return
        count = np.bincount(row, minlength=len(todo))
        col = np.arange(len(row)) - np.repeat(np.r_[0, np.cumsum(count)[:-1]], count)
        n, k = len(todo), int(count.max())
        if k < 2:
            return
        pose_of = np.tile(np.eye(4), (len(self.scene.images), 1, 1))
        for j, pose in self.state.registered.items():
            pose_of[j] = pose
        image, index = np.zeros((n, k), np.int64), np.zeros((n, k), np.int64)
        uv, valid = np.zeros((n, k, 2)), np.zeros((n, k), bool)
        image[row, col], index[row, col], uv[row, col], valid[row, col] = self.tracks.image[elem], elem, \
            self.uv[elem], True
        poses = pose_of[image]
        xyz = triangulate_dlt(poses, uv, valid)
        ok = (count >= 2) & np.isfinite(xyz).all(1)
        x_cam = np.einsum("nkij,nj->nki", poses[..., :3, :3], np.nan_to_num(xyz)) + poses[..., :3, 3]
        projected = np.full((n, k, 2), np.nan)
        for cam_id in {self.scene.images[j].camera_id for j in self.state.registered}:
            sel = valid & (self.camera_id[image] == cam_id) & (x_cam[..., 2] > 0)
            projected[sel] = self.scene.cameras[cam_id].project(x_cam[sel])
        errors = np.linalg.norm(projected - self.px[index], axis=-1)
        good = valid & ok[:, None] & (np.nan_to_num(errors, nan=np.inf) <= self.opt.max_reprojection_px)
        centers = np.linalg.inv(poses)[..., :3, 3]
        angles = max_triangulation_angle_deg(centers, np.nan_to_num(xyz), good)
        accept = ok & (good.sum(1) >= 2) & (good == valid).all(1) & (angles >= self.opt.min_angle_deg)
        self.state.xyz[todo[accept]] = xyz[accept]
        self.state.used[index[accept][valid[accept]]] = True

    def _angles(self, tracks: np.ndarray) -> np.ndarray:
        if not len(tracks):
            return np.zeros(0)
        out = []
        for t in tracks.tolist():
            e = np.arange(self.tracks.offsets[t], self.tracks.offsets[t + 1])
            e = e[self.state.used[e]]
            centers = np.linalg.inv(np.stack([self.state.registered[int(j)] for j in self.tracks.image[e]]))
            out.append(max_triangulation_angle_deg(centers[None, :, :3, 3], self.state.xyz[t][None],
                                                   np.ones((1, len(e)), bool))[0])
        return np.array(out)

    # -- bundle adjustment -------------------------------------------------------------------------------------

    def bundle_adjust(self, iterations: int, loss: str = "huber", around: int | None = None) -> float:
        """BA over the registered images and triangulated points; drops observations that stay above the
        reprojection threshold, and points left with fewer than two. Returns the mean error, px.

        Global by default. Local with `around=i`: image i and the `local_ba_images` registered images sharing
        the most points with it move, with the points they see; other images seeing those points are held.
        """
        triangulated = np.isfinite(self.state.xyz[:, 0])
        if around is None:
            points = np.flatnonzero(triangulated)
            free = set(self.state.registered)
        else:
            seen = self.state.used & triangulated[self.track_of]
            mine = np.zeros(len(self.tracks), bool)
            mine[self.track_of[seen & (self.tracks.image == around)]] = True
            shared = np.bincount(self.tracks.image[seen & mine[self.track_of]], minlength=len(self.scene.images))
            shared[around] = 0
            neighbours = [int(j) for j in np.argsort(-shared)[: self.opt.local_ba_images] if shared[j] > 0]
            free = {around, *neighbours}
            local = np.zeros(len(self.tracks), bool)
            local[self.track_of[seen & np.isin(self.tracks.image, list(free))]] = True
            points = np.flatnonzero(local)
        pindex = np.full(len(self.tracks), -1)
        pindex[points] = np.arange(len(points))
        elems = np.flatnonzero(self.state.used & (pindex[self.track_of] >= 0))
        images = sorted({int(j) for j in self.tracks.image[elems]} | free)
        index = {j: r for r, j in enumerate(images)}
        cam_ids = sorted({self.scene.images[j].camera_id for j in images})
        problem = bundle.Problem(
            np.stack([self.state.registered[j] for j in images]),
            np.array([cam_ids.index(self.scene.images[j].camera_id) for j in images]),
            tuple(self.scene.cameras[c].model for c in cam_ids), tuple(self.scene.cameras[c].params for c in cam_ids),
            self.state.xyz[points], np.array([index[int(j)] for j in self.tracks.image[elems]], dtype=np.int64),
            pindex[self.track_of[elems]], self.px[elems])
        fixed = None if around is None else np.array([index[j] for j in images if j not in free], dtype=np.int64)
        result = bundle.solve(problem, loss=loss, max_iterations=iterations, fixed_images=fixed)
        for r, j in enumerate(images):
            self.state.registered[j] = result.cam_from_world[r]
        self.state.xyz[points] = result.points
        err = np.linalg.norm(result.residuals, axis=1)
        self.state.used[elems[err > self.opt.max_reprojection_px]] = False
        counts = np.bincount(self.track_of[self.state.used], minlength=len(self.tracks))
        self.state.xyz[(counts < 2) & triangulated] = np.nan
        self.state.used &= counts[self.track_of] >= 2
        return float(err[err <= self.opt.max_reprojection_px].mean()) if (err <= self.opt.max_reprojection_px).any() \
            else float("nan")

    def points(self) -> Points:
        """The triangulated tracks as Points: observations kept by the model, mean reprojection error, colour
        of the first observation's pixel."""
        keep = np.flatnonzero(np.isfinite(self.state.xyz[:, 0]))
        elems = np.flatnonzero(self.state.used & np.isin(self.track_of, keep))
        order = np.argsort(self.track_of[elems], kind="stable")
        elems = elems[order]
        lengths = np.bincount(self.track_of[elems], minlength=len(self.tracks))[keep]
        errors = np.zeros(len(elems))
        rgb = np.zeros((len(self.tracks), 3), np.uint8)
        for j in np.unique(self.tracks.image[elems]):
            sel = elems[self.tracks.image[elems] == j]
            pose, cam = self.state.registered[int(j)], self.cams[int(j)]
            x_cam = self.state.xyz[self.track_of[sel]] @ pose[:3, :3].T + pose[:3, 3]
            errors[np.searchsorted(elems, sel)] = np.linalg.norm(cam.project(x_cam) - self.px[sel], axis=1)
            rgb[self.track_of[sel]] = _colours(self.scene.images[int(j)].path, self.px[sel])
        offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
        mean_error = np.add.reduceat(errors, offsets[:-1]) / np.maximum(lengths, 1) if len(keep) else np.zeros(0)
        return Points(xyz=self.state.xyz[keep].copy(), rgb=rgb[keep], error=mean_error, track_offsets=offsets,
                      track_image=self.tracks.image[elems].astype(np.int32),
                      track_keypoint=self.tracks.keypoint[elems].astype(np.int32))

    def run(self, component: np.ndarray) -> None:
        """Register every image of the component that can be registered."""
        last_ba = len(self.state.registered)
        while True:
            progressed = False
            for i in self.next_images(component):
                if self.register(i):
                    progressed = True
                    if len(self.state.registered) >= self.opt.ba_growth * last_ba:
                        self.bundle_adjust(self.opt.ba_iterations)
                        last_ba = len(self.state.registered)
                    else:
                        self.bundle_adjust(self.opt.ba_iterations, around=i)
                    break
            if not progressed:
                return


def _colours(path: str, px: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 colours of the image at COLMAP pixels px (N, 2); zeros when the image cannot be read."""
    try:
        rgb = images.read_rgb(path)
    except DataError:
        return np.zeros((len(px), 3), np.uint8)
    col = np.clip(np.floor(px[:, 0]).astype(int), 0, rgb.shape[1] - 1)
    row = np.clip(np.floor(px[:, 1]).astype(int), 0, rgb.shape[0] - 1)
    return rgb[row, col, :3]
