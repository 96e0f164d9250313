"""NeRF figures: test PSNR / SSIM against training wall-clock, rays per second in training and rendering,
peak memory, render time per view.

    .venv/bin/python benchmarks/nerf.py [--data ../shared/data/SYNTHETIC_nerf_lego_200px]
        [--budget-min 20] [--steps 16000] [--out out/bench_nerf] [--set nerf.key=value ...]

Runs pipelines/nerf.yaml through the library, so the figures are those `recon3d nerf` gives (see
benchmarks/gaussians.py for what is printed); training rays per second = steps x rays / training seconds.
"""

from _radiance import arguments, run

if __name__ == "__main__":
    args = arguments(__doc__, 16_000, "out/bench_nerf")
    out = run("nerf", "nerf", args)
    counts, rays = out["report"]["counts"], out["report"]["events"]["rays"]  # the config may say auto
    print(f"training: {counts['steps'] * rays / counts['train_seconds'] / 1e3:.1f} k rays/s ({rays} rays per step)")
