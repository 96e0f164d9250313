"""Where recon3d finds its data files: stage presets in `configs/`, pipelines in `pipelines/`.

They live at the top of the repository (DESIGN.md's layout); `RECON3D_HOME` points elsewhere.
"""

import os
from pathlib import Path

HOME = Path(os.environ.get("RECON3D_HOME", Path(__file__).resolve().parents[1]))
CONFIG_DIR = HOME / "configs"
PIPELINE_DIR = HOME / "pipelines"
