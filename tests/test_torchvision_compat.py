"""recon3d.labels.torchvision_compat: the pure-torch NMS against a plain-Python one, `import torchvision`
after it, and nothing done where the compiled op exists. Import order matters, so the checks that import
torchvision run in a fresh interpreter each."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from recon3d.labels.torchvision_compat import ensure_torchvision, nms


def reference_nms(boxes: list[list[float]], scores: list[float], threshold: float) -> list[int]:
    """Greedy NMS in plain Python: by decreasing score (ties: lower index first), drop IoU > threshold."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    area = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
    keep: list[int] = []
    for i in order:
        suppressed = False
        for k in keep:
            w = max(0.0, min(boxes[i][2], boxes[k][2]) - max(boxes[i][0], boxes[k][0]))
            h = max(0.0, min(boxes[i][3], boxes[k][3]) - max(boxes[i][1], boxes[k][1]))
            union = area[i] + area[k] - w * h
            if union > 0 and w * h / union > threshold:
                suppressed = True
                break
        if not suppressed:
            keep.append(i)
    return keep


def random_boxes(rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    xy = rng.uniform(0, 40, (n, 2))
    wh = rng.uniform(1, 20, (n, 2))
    scores = rng.integers(0, 5, n) / 4.0  # few distinct values: many ties
    return torch.tensor(np.c_[xy, xy + wh]), torch.tensor(scores)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.7])
def test_nms_matches_reference(seed, threshold):
    boxes, scores = random_boxes(np.random.default_rng(seed), 60)
    kept = nms(boxes, scores, threshold)
    assert kept.dtype == torch.int64
    assert kept.tolist() == reference_nms(boxes.tolist(), scores.tolist(), threshold)
    kept32 = nms(boxes.float(), scores.float(), threshold)
    assert kept32.tolist() == kept.tolist()


def test_nms_edge_cases():
    empty = nms(torch.zeros((0, 4)), torch.zeros(0), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.int64
    one = nms(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([0.3]), 0.5)
    assert one.tolist() == [0]
    same = torch.tensor([[0.0, 0, 4, 4]] * 3)
    assert nms(same, torch.tensor([0.5, 0.5, 0.5]), 0.5).tolist() == [0]  # tie: lowest index wins
    degenerate = torch.tensor([[1.0, 1, 1, 1], [1.0, 1, 1, 1]])  # IoU 0/0: torchvision keeps both
    assert nms(degenerate, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"\(3,\)"):
        nms(torch.zeros((2, 4)), torch.zeros(3), 0.5)


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_import_torchvision_after_ensure():
    out = run_python("""
        import logging
        logging.basicConfig(level=logging.DEBUG, format="%(message)s")
        import torch
        from recon3d.labels.torchvision_compat import ensure_torchvision, nms
        state = ensure_torchvision()
        assert ensure_torchvision() == state  # idempotent
        import torchvision
        import torchvision.ops.boxes
        g = torch.Generator().manual_seed(0)
        xy = torch.rand(200, 2, generator=g) * 50
        boxes = torch.cat([xy, xy + 1 + torch.rand(200, 2, generator=g) * 20], 1)
        scores = torch.rand(200, generator=g)
        for fn in (torchvision.ops.nms, torchvision.ops.boxes.nms):
            assert fn(boxes, scores, 0.5).tolist() == nms(boxes, scores, 0.5).tolist()
        idx = torch.randint(0, 3, (200,), generator=g)
        assert len(torchvision.ops.batched_nms(boxes, scores, idx, 0.5)) > 0
        print("STATE", state)
    """)
    assert "STATE" in out


def test_shim_when_compiled_ops_missing():
    plain = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True, timeout=120)
    if plain.returncode == 0:
        pytest.skip("torchvision's compiled ops load here: the shim is not needed")
    assert "torchvision::nms" in plain.stderr, plain.stderr[-500:]
    out = run_python("""
        from recon3d.labels.torchvision_compat import ensure_torchvision
        assert ensure_torchvision() == "shim"
        import torchvision
        assert torchvision.ops.nms.__name__ == "nms_without_compiled_ops"
        print("OK")
    """)
    assert "OK" in out


def test_noop_when_op_exists():
    """An op namespace that already has torchvision::nms (as the compiled extension would): nothing defined,
    nothing patched."""
    out = run_python("""
        import torch
        lib = torch.library.Library("torchvision", "FRAGMENT")  # stands in for torchvision/_C.so
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.impl("nms", lambda d, s, t: torch.arange(len(d)), "CPU")
        from recon3d.labels import torchvision_compat
        assert torchvision_compat.ensure_torchvision() == "compiled"
        assert torchvision_compat._lib is None
        import torchvision.ops.boxes
        assert torchvision.ops.boxes.nms.__module__ == "torchvision.ops.boxes"
        print("OK")
    """)
    assert "OK" in out


def test_ensure_in_process_then_ops_agree():
    """Whichever NMS the op is (torchvision's compiled one, or the shim here), it agrees with the plain-Python one."""
    ensure_torchvision()
    boxes, scores = random_boxes(np.random.default_rng(9), 40)
    assert torch.ops.torchvision.nms(boxes, scores, 0.4).tolist() == reference_nms(boxes, scores, 0.4)
