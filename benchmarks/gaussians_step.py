"""What one Gaussian training step costs on the CPU, part by part: rasterizing a view (projection + SH +
compositing) forward and backward, and the D-SSIM term forward and backward, against the PyTorch reference of
each part (the `reference` rasterizer's projection and `metrics.ssim`). Prints figures; not a test.

    .venv/bin/python benchmarks/gaussians_step.py [--gaussians 20000,80000,150000] [--size 512x384] [--runs 10]
    .venv/bin/python benchmarks/gaussians_step.py --model OUT/cache/gaussians-.../model.safetensors

A synthetic model by default: Gaussians spread through the view's frustum 2-6 units away, of a screen size like
a trained photo model's (median footprint half-width about 4 px), opacity uniform in [0.05, 1], SH of degree 3;
`--model` times a trained model seen from the centre of its Gaussians instead. Times are medians over `--runs`
after a warm-up, on torch's threads (`OMP_NUM_THREADS` to change).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from recon3d.radiance.gaussians.composite import composite_cpu
from recon3d.radiance.gaussians.project import project
from recon3d.radiance.gaussians.rasterize import _colors, rasterize
from recon3d.radiance.metrics import ssim


def synthetic(n: int, width: int, height: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    f = 1.1 * max(width, height)
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]])
    z = 2 + 4 * torch.rand(n, generator=g)
    xy = (torch.rand(n, 2, generator=g) - 0.5) * torch.tensor([width, height]) / f * z[:, None] * 1.1
    means = torch.cat([xy, z[:, None]], 1)
    scales = torch.exp(torch.randn(n, 3, generator=g) * 0.6) * z[:, None] * 2.0 / f  # ~2 px sigma
    params = {"means": means, "quats": torch.randn(n, 4, generator=g), "scales": scales,
              "opacities": 0.05 + 0.95 * torch.rand(n, generator=g), "sh": torch.randn(n, 16, 3, generator=g) * 0.2}
    return params, torch.eye(4), K


def trained(path: str, width: int, height: int):
    from recon3d.radiance.gaussians.model import GaussianModel

    model = GaussianModel.load(path)
    with torch.no_grad():
        params = {"means": model.means, "quats": model.quats, "scales": model.scales,
                  "opacities": model.opacities, "sh": model.sh}
        centre = params["means"].median(0).values
        spread = (params["means"] - centre).abs().median(0).values.max()
    cam_from_world = torch.eye(4)
    cam_from_world[:3, 3] = -(centre - torch.tensor([0.0, 0.0, 3.0 * float(spread)]))  # 3 spreads in front
    f = 1.1 * max(width, height)
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]])
    return {k: v.detach() for k, v in params.items()}, cam_from_world, K


def timed(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def step_parts(params, cam_from_world, K, width: int, height: int, runs: int) -> dict[str, float]:
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    target = torch.rand(height, width, 3, generator=torch.Generator().manual_seed(1))
    weights = torch.rand(height, width, 3, generator=torch.Generator().manual_seed(2))

    def raster():
        rgb, alpha, depth, _ = rasterize(leaves["means"], leaves["quats"], leaves["scales"], leaves["opacities"],
                                         leaves["sh"], cam_from_world, K, width, height, sh_degree=3)
        ((rgb * weights).sum() + alpha.sum() + depth.sum()).backward()

    def torch_projection():
        p = project(leaves["means"], leaves["quats"], leaves["scales"], leaves["opacities"], cam_from_world, K,
                    width, height)
        rgb = _colors(p, leaves["means"], leaves["sh"], 3, cam_from_world)
        (p.means2d.sum() + p.conics.sum() + p.depths.sum() + p.opacities.sum() + rgb.sum()).backward()

    def torch_projection_and_kernel():  # the `cpu` rasterizer before its projection had a kernel
        p = project(leaves["means"], leaves["quats"], leaves["scales"], leaves["opacities"], cam_from_world, K,
                    width, height)
        rgb = _colors(p, leaves["means"], leaves["sh"], 3, cam_from_world)
        feats = torch.cat([rgb, p.depths[:, None]], -1)
        image, alpha = composite_cpu(p.means2d, p.conics, p.opacities, feats, p.depths, p.extents, torch.zeros(4),
                                     width, height)
        ((image[..., :3] * weights).sum() + alpha.sum() + image[..., 3].sum()).backward()

    image = torch.rand(height, width, 3, generator=torch.Generator().manual_seed(3)).requires_grad_(True)

    def dssim(fn):
        return lambda: (1 - fn(image, target)).backward()

    with torch.no_grad():
        visible = len(project(params["means"], params["quats"], params["scales"], params["opacities"],
                              cam_from_world, K, width, height).ids)
    out = {"visible": visible, "rasterize (kernels)": timed(raster, runs),
           "rasterize (PyTorch projection + compositing kernel)": timed(torch_projection_and_kernel, runs),
           "projection + SH, PyTorch": timed(torch_projection, runs),
           "D-SSIM, PyTorch (metrics.ssim)": timed(dssim(ssim), runs)}
    try:
        from recon3d.radiance.ssim_cpu import ssim_cpu
    except ImportError:  # a checkout from before the kernel
        return out
    out["D-SSIM, kernel (ssim_cpu)"] = timed(dssim(ssim_cpu), runs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gaussians", default="20000,80000,150000")
    parser.add_argument("--size", default="512x384", help="view width x height")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--model", default="", help="a trained model.safetensors instead of synthetic ones")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    print(f"torch threads {torch.get_num_threads()}, view {width}x{height}, forward + backward, median ms of "
          f"{args.runs}")
    cases = [(args.model, trained(args.model, width, height))] if args.model else [
        (f"synthetic {n}", synthetic(n, width, height)) for n in map(int, args.gaussians.split(","))]
    for name, (params, cam_from_world, K) in cases:
        parts = step_parts(params, cam_from_world, K, width, height, args.runs)
        print(f"{name} ({len(params['means'])} Gaussians, {parts.pop('visible')} visible):")
        for part, ms in parts.items():
            print(f"  {part:55s} {ms:8.1f} ms")


if __name__ == "__main__":
    main()
