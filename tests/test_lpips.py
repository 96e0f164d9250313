"""LPIPS from local weights: the files' layouts load, the network equals a plain re-statement of the lpips
package's, its basic properties hold, and bad files are named. Weights are made here (none are downloaded)."""

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from recon3d.errors import DataError
from recon3d.radiance.lpips import CONVS, SCALE, SHIFT, TORCHVISION_INDEX, load_lpips


def make_weights(folder):
    """Random weights in the two real files' layouts: torchvision AlexNet (with its classifier) and lpips heads,
    saved in `folder`; returns both paths and both state dicts."""
    g = torch.Generator().manual_seed(0)
    backbone = {}
    for j, (i, o, k, _, _) in zip(TORCHVISION_INDEX, CONVS, strict=True):
        backbone[f"features.{j}.weight"] = torch.randn(o, i, k, k, generator=g) * (2 / (i * k * k)) ** 0.5
        backbone[f"features.{j}.bias"] = torch.randn(o, generator=g) * 0.01
    backbone["classifier.1.weight"] = torch.zeros(4, 9216)  # present in the real file, unused by LPIPS
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c[1], 1, 1, generator=g) for i, c in enumerate(CONVS)}
    torch.save(backbone, folder / "alexnet.pth")
    torch.save(heads, folder / "alex.pth")
    return folder / "alexnet.pth", folder / "alex.pth", backbone, heads


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return make_weights(tmp_path_factory.mktemp("lpips"))


def reference_lpips(a, b, backbone, heads):
    """The lpips package's forward written out: torchvision's features Sequential sliced at relu1..relu5."""
    def feats(x):
        shift, scale = torch.tensor(SHIFT).view(1, 3, 1, 1), torch.tensor(SCALE).view(1, 3, 1, 1)
        h = ((x.permute(0, 3, 1, 2) * 2 - 1) - shift) / scale
        out = []
        for n, (j, (_, _, _, s, p)) in enumerate(zip(TORCHVISION_INDEX, CONVS, strict=True)):
            if n in (1, 2):
                h = F.max_pool2d(h, kernel_size=3, stride=2)
            h = F.relu(F.conv2d(h, backbone[f"features.{j}.weight"], backbone[f"features.{j}.bias"], s, p))
            out.append(h)
        return out

    total = 0
    for i, (fa, fb) in enumerate(zip(feats(a), feats(b), strict=True)):
        na = fa / (torch.sqrt(torch.sum(fa ** 2, dim=1, keepdim=True)) + 1e-10)
        nb = fb / (torch.sqrt(torch.sum(fb ** 2, dim=1, keepdim=True)) + 1e-10)
        total = total + F.conv2d((na - nb) ** 2, heads[f"lin{i}.model.1.weight"]).mean(dim=[2, 3], keepdim=True)
    return total.flatten()


def test_lpips_equals_the_packages_forward_and_behaves(weights):
    backbone_path, heads_path, backbone, heads = weights
    net = load_lpips(backbone_path, heads_path)
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 64, 80, 3, generator=g)
    b = (a + 0.1 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    c = (a + 0.3 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    d = net(a, b)
    assert torch.allclose(d, reference_lpips(a, b, backbone, heads), rtol=1e-5, atol=1e-7)
    assert torch.all(net(a, a) == 0) and torch.all(d > 0) and torch.all(net(a, c) > d)
    assert torch.allclose(net(b, a), d, rtol=1e-5) and torch.allclose(net(a[0], b[0]), d[:1], rtol=1e-5)
    assert len(net.digest) == 16


def test_bad_lpips_files_are_named(weights, tmp_path):
    backbone_path, heads_path, backbone, heads = weights
    with pytest.raises(DataError, match="do not exist"):
        load_lpips(tmp_path / "none.pth", heads_path)
    wrong = dict(heads, **{"lin2.model.1.weight": torch.rand(1, 100, 1, 1)})
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(DataError, match=r"lin2.model.1.weight is \(1, 100, 1, 1\), expected \(1, 384, 1, 1\)"):
        load_lpips(backbone_path, tmp_path / "wrong.pth")
    (tmp_path / "junk.pth").write_text("not a state dict")
    with pytest.raises(DataError, match="cannot be read"):
        load_lpips(tmp_path / "junk.pth", heads_path)
