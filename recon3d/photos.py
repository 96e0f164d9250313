"""Photos to a radiance field in one command: a training pipeline with the SfM pipeline in front.

`recon3d splat` / `nerf` / `compare` on a plain folder of photos (no poses) run `pipelines/sfm.yaml` first and
train from its bundle-adjusted scene (cameras, poses and the sparse points the Gaussians start from). The SfM
nodes keep their ids and configs, so their cache keys are those of `recon3d run sfm` on the same data: a
`splat` after an `sfm` into the same `--out` re-runs no SfM node, and the other way round.
"""

from __future__ import annotations

from pathlib import Path

from recon3d.dag.pipeline import PipelineSpec, read_spec
from recon3d.stages.ingest import detect_format

SFM = "sfm"
SFM_OUTPUT = "bundle_adjust"  # the SfM node whose scene the training nodes read


def needs_sfm(data: str | Path) -> bool:
    """Whether `data` is a folder of photos without poses (not a COLMAP project, nerfstudio or Blender folder)."""
    root = Path(data).expanduser()
    return root.is_dir() and detect_format(root.resolve()) == "images"


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
