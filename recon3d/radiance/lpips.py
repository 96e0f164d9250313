"""LPIPS (Zhang et al. 2018, v0.1, AlexNet) from local weight files; nothing is downloaded.

Two files the user already has: torchvision's AlexNet state dict (`alexnet-owt-7be5be79.pth`: keys
`features.{0,3,6,8,10}.{weight,bias}`; other keys are ignored) and the LPIPS package's linear heads
(`lpips/weights/v0.1/alex.pth`: keys `lin{0..4}.model.1.weight`, shapes (1, C, 1, 1)). The network is the
package's: inputs in [-1, 1] shifted and scaled per channel, the five ReLU outputs of AlexNet's features,
each unit-normalised over channels, squared differences weighted by the heads, averaged over the image,
summed over layers. Lower is more similar; identical images score 0.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import Tensor, nn

from recon3d.errors import DataError

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
# AlexNet's features: (in, out, kernel, stride, padding) per conv; a 3x3/2 max-pool precedes convs 1 and 2
CONVS = ((3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1), (256, 256, 3, 1, 1))
TORCHVISION_INDEX = (0, 3, 6, 8, 10)  # their positions in torchvision's `features` Sequential


class Lpips(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, s, p) for i, o, k, s, p in CONVS)
        self.heads = nn.ModuleList(nn.Conv2d(c[1], 1, 1, bias=False) for c in CONVS)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        self.digest = ""

    def features(self, x: Tensor) -> list[Tensor]:
        out, h = [], (x - self.shift) / self.scale
        for i, conv in enumerate(self.convs):
            if i in (1, 2):
                h = nn.functional.max_pool2d(h, 3, 2)
            h = torch.relu(conv(h))
            out.append(h)
        return out

    @torch.no_grad()
    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """a, b: (H, W, 3) or (N, H, W, 3) float in [0, 1]. Returns (N,) distances."""
        a, b = (t.unsqueeze(0) if t.dim() == 3 else t for t in (a, b))
        a, b = (t.permute(0, 3, 1, 2).float() * 2 - 1 for t in (a, b))
        total = torch.zeros(a.shape[0])
        for head, fa, fb in zip(self.heads, self.features(a), self.features(b), strict=True):
            na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total += head((na - nb) ** 2).mean(dim=(1, 2, 3))
        return total


def load_lpips(backbone: str | Path, heads: str | Path) -> Lpips:
    """The network with torchvision's AlexNet weights (`backbone`) and the LPIPS heads (`heads`).
    DataError naming the file and the key when a file is missing or does not fit."""
    net = Lpips()
    state = {}
    for path, keys in ((backbone, [(f"features.{j}.{p}", f"convs.{i}.{p}") for i, j in enumerate(TORCHVISION_INDEX)
                                   for p in ("weight", "bias")]),
                       (heads, [(f"lin{i}.model.1.weight", f"heads.{i}.weight") for i in range(len(CONVS))])):
        path = Path(path)
        if not path.is_file():
            raise DataError(f"LPIPS weights {path} do not exist", "give local files: torchvision's AlexNet state "
                            "dict and the lpips package's v0.1/alex.pth (nothing is downloaded)")
        try:
            found = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise DataError(f"LPIPS weights {path} cannot be read: {exc}", "give a torch state dict (.pth)") from None
        for src, dst in keys:
            want = net.state_dict()[dst].shape
            if src not in found or tuple(found[src].shape) != tuple(want):
                got = tuple(found[src].shape) if src in found else "missing"
                raise DataError(f"LPIPS weights {path}: {src} is {got}, expected {tuple(want)}",
                                "backbone: torchvision AlexNet (alexnet-owt-*.pth); heads: lpips v0.1 alex.pth")
            state[dst] = found[src]
    net.load_state_dict({**net.state_dict(), **state})
    h = hashlib.sha256()
    for path in (backbone, heads):
        h.update(Path(path).read_bytes())
    net.digest = h.hexdigest()[:16]
    return net.eval()
