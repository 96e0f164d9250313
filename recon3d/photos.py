"""Photos to a radiance field in one command: a training pipeline with what the data lacks in front.

`recon3d splat` / `nerf` / `compare` on a plain folder of photos (no poses) run `pipelines/sfm.yaml` first and
train from its bundle-adjusted scene (cameras, poses and the sparse points the Gaussians start from). The SfM
nodes keep their ids and configs, so their cache keys are those of `recon3d run sfm` on the same data: a
`splat` after an `sfm` into the same `--out` re-runs no SfM node, and the other way round.

Posed photos that carry no points (a nerfstudio or Blender folder of opaque images) get their sparse points
from their own poses instead: features, matching between spatial neighbours, two-view verification and
triangulation with the poses held (`triangulate.mapper: known`, COLMAP's point_triangulator). Images with
alpha masks do not need them (the Gaussians start from the masks' visual hull).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from recon3d.dag.pipeline import NodeSpec, PipelineSpec, read_spec
from recon3d.io.nerfstudio import read_transforms
from recon3d.stages.ingest import detect_format

SFM = "sfm"
SFM_OUTPUT = "bundle_adjust"  # the SfM node whose scene the training nodes read
POINTS = (  # sparse points from known poses: the nodes, in order, each after the one before
    NodeSpec(id="features", stage="features", overrides={"backend": "pycolmap_sift"}),
    NodeSpec(id="match", stage="match", overrides={"pairs": "spatial"}),
    NodeSpec(id="essential", stage="essential"),
    NodeSpec(id="triangulate", stage="triangulate", overrides={"mapper": "known"}),
)


def for_data(spec: PipelineSpec, data: str | Path) -> PipelineSpec:
    """`spec` as it runs on `data`: with the SfM in front for a photo folder (`with_sfm`), with the sparse
    points triangulated from the poses for posed photos without points (`with_points`), else as it is."""
    if needs_sfm(data):
        return with_sfm(spec)
    if needs_points(data):
        return with_points(spec)
    return spec


def needs_sfm(data: str | Path) -> bool:
    """Whether `data` is a folder of photos without poses (not a COLMAP project, nerfstudio or Blender folder),
    or a video."""
    root = Path(data).expanduser()
    return (root.is_dir() or root.is_file()) and detect_format(root.resolve()) in ("images", "video")


def needs_points(data: str | Path) -> bool:
    """Whether `data` is a nerfstudio or Blender folder (poses, no sparse points) of images without alpha."""
    root = Path(data).expanduser()
    if not root.is_dir() or detect_format(root.resolve()) not in ("nerfstudio", "blender"):
        return False
    try:
        images = read_transforms(root.resolve()).images
        with Image.open(images[0].path) as first:
            return first.mode not in ("RGBA", "LA", "PA") and "transparency" not in first.info
    except Exception:  # noqa: BLE001 - a folder it cannot judge: ingest names what is wrong with it
        return False


def with_points(spec: PipelineSpec) -> PipelineSpec:
    """`spec` with the `POINTS` nodes after its `ingest` node; what ran after ingest runs after them."""
    ids = {n.id for n in spec.nodes}
    clash = sorted(ids & {n.id for n in POINTS})
    if clash:
        raise ValueError(f"pipeline {spec.name} shares node ids {clash} with the point triangulation")
    ingest = next(n for n in spec.nodes if n.stage == "ingest")
    chain, before = [], ingest.id
    for node in POINTS:
        chain.append(node.model_copy(update={"after": [before]}))
        before = node.id
    nodes = []
    for n in spec.nodes:
        nodes.append(n.model_copy(update={"after": [before if p == ingest.id else p for p in n.after]}))
        if n is ingest:
            nodes += chain
    return spec.model_copy(update={"name": f"points+{spec.name}", "nodes": nodes})


def with_sfm(spec: PipelineSpec) -> PipelineSpec:
    """`spec` with its `ingest` node replaced by the SfM pipeline's nodes; what ran after ingest runs after
    bundle adjustment. The name becomes `sfm+<name>`."""
    sfm, _ = read_spec(SFM)
    ids = {n.id for n in sfm.nodes}
    rest = [n for n in spec.nodes if n.stage != "ingest"]
    clash = sorted(ids & {n.id for n in rest})
    if clash:
        raise ValueError(f"pipeline {spec.name} shares node ids {clash} with the SfM pipeline")
    rest = [n.model_copy(update={"after": [SFM_OUTPUT if p == "ingest" else p for p in n.after]}) for n in rest]
    return spec.model_copy(update={"name": f"{SFM}+{spec.name}", "nodes": list(sfm.nodes) + rest})
