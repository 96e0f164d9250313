"""3D Gaussian splatting figures: test PSNR / SSIM against training wall-clock, Gaussian count, peak memory,
render speed.

    .venv/bin/python benchmarks/gaussians.py [--data ../shared/data/SYNTHETIC_nerf_lego_200px]
        [--budget-min 20] [--steps 10000] [--out out/bench_gaussians] [--set gaussians.key=value ...]

Runs pipelines/gaussians.yaml (ingest -> gaussians -> render -> evaluate) through the library, so the
figures are those `recon3d splat` gives; prints the PSNR-vs-time curve the trainer measured on 5 test views,
the final means over every test view, and the render speed of the trained model (each test view rendered
5 times after a warm-up, projection + SH + compositing, no file I/O).
"""

from _radiance import arguments, run

if __name__ == "__main__":
    run("gaussians", "gaussians", arguments(__doc__, 10_000, "out/bench_gaussians"))
