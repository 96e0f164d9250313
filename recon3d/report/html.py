"""The run report: one self-contained HTML file (embedded PNGs, no server) for any run folder."""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from recon3d.errors import DataError
from recon3d.io.files import atomic_write, read_json
from recon3d.io.images import IMAGE_EXTENSIONS, read_rgb
from recon3d.radiance.protocol import count_views
from recon3d.report.web_splat import splat_view_section
from recon3d.scene import Scene


def load_run(out: Path) -> tuple[dict, dict[str, dict], Scene | None]:
    """run.json, the node reports and the last finished node's scene of a run folder."""
    record_path = out / "run.json"
    if not out.exists():
        raise DataError(f"{out} does not exist", "give the --out folder of a run (recon3d run, splat, nerf, compare)")
    if not record_path.is_file():
        photos = out.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in out.iterdir())
        raise DataError(f"{out} is not a recon3d run folder (no run.json)" + (": it holds photos" if photos else ""),
                        f"give the photos as --data, e.g. recon3d splat --data {out} --out OUT (or recon3d mesh "
                        "--data ... --out OUT), then OUT here" if photos else
                        "pass the --out folder of a run (recon3d run, splat, nerf, compare)")
    record = read_json(record_path)
    for node in record["nodes"]:  # OUT/cache/<node>-<key>, wherever the run was started from or moved to
        node["folder"] = str(out / "cache" / Path(node["folder"]).name)
    reports = {}
    for node in record["nodes"]:
        path = out / "reports" / f"{node['id']}.json"
        if path.is_file() and node["status"] in ("ran", "cached"):  # else an earlier run's: this one has not
            # reached the node or has not finished it
            reports[node["id"]] = read_json(path)
    scene = None
    for node in reversed(record["nodes"]):
        if node["status"] in ("ran", "cached"):
            scene = Scene.load(Path(node["folder"]) / "scene")
            break
    return record, reports, scene


def dropped_images(reports: Iterable[dict]) -> dict[str, str]:
    """Every image the nodes left out, once, with the first reason a node gave (the cause: a photo ingest could
    not read is not also "not posed"). Items named by an image file name only: image pairs (`a | b`) and what
    else a node leaves out (a label file, `points.ply`, `mask_classes`) are not images."""
    first: dict[str, str] = {}
    for rep in reports:
        for d in rep.get("dropped", []):
            if is_image_name(d["item"]):
                first.setdefault(d["item"], d["reason"])
    return first


def is_image_name(item: str) -> bool:
    """A dropped item that is an image: a file name with an image extension, not a pair `a | b`."""
    return " | " not in item and PurePosixPath(item).suffix.lower() in IMAGE_EXTENSIONS


def node_status(node: dict, report: dict) -> str:
    """ran / cached / failed / not run, or `skipped: <why>` for a node that ran and found nothing to do
    (a check without ground truth)."""
    return f"skipped: {report['skipped']}" if report.get("skipped") else node["status"]


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>none</p>"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


NODE_FILE = re.compile(r"^/.*/cache/[\w.-]+-[0-9a-f]{16}/files/")  # OUT/cache/<node>-<key>/files/...


def _float(value: float) -> str:
    """Four significant digits, and a measurement that rounds to a whole number still reads as one
    (PSNR 15.9996 is `16.00`, not `16`, which would read as a count)."""
    short = f"{value:.4g}"
    if not short.lstrip("-").isdigit() or float(value).is_integer():
        return short
    kept = f"{value:#.4g}"  # 16.00; but 9300.4 would be "9300.": one decimal there
    return f"{value:.1f}" if kept.endswith(".") else kept


def _fmt(value: Any, nested: bool = False) -> str:
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, dict):  # readable, not JSON: the JSON is in the folded raw reports
        if nested:
            return "(" + ", ".join(f"{k} {_fmt(v, True)}" for k, v in value.items()) + ")"
        return "; ".join(f"{k}: {_fmt(v, True)}" for k, v in value.items())
    if isinstance(value, list):
        rows = value if value and all(isinstance(v, list) for v in value) else [value]
        numbers = all(isinstance(x, int | float) and not isinstance(x, bool) for row in rows for x in row)
        if numbers and sum(len(row) for row in rows) > 8:  # a matrix: unreadable in a cell
            shape = f"{len(rows)}x{len(rows[0])} matrix" if len(rows) > 1 else f"{len(rows[0])} numbers"
            return f"({shape}: in the run's JSON files)"
        return ", ".join(_fmt(v, True) for v in value)
    if isinstance(value, str) and NODE_FILE.search(value):  # a file in a node's cache folder: its name says it
        return Path(value).name
    return "" if value is None else str(value)


def _number(value: float) -> str:
    """Counts as integers (131639, not 1.316e+05), measurements to four significant digits."""
    return str(int(value)) if float(value).is_integer() else _float(value)


def _img(png: bytes, caption: str = "") -> str:
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{base64.b64encode(png).decode()}">{cap}</figure>'


def _png(path: Path) -> str:
    return _img(path.read_bytes(), path.name)


def _svg(path: Path) -> str:
    """An SVG a stage wrote (recon3d's own drawing, e.g. the match graph), inline so its hover texts show."""
    return _inline_svg(path.read_text(), path.name)


def _inline_svg(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _node_details(node: dict, report: dict) -> list[str]:
    """A node's per-item table (e.g. calibration images) and the PNGs and SVGs it wrote into its folder."""
    parts = []
    standard = {"node", "stage", "stage_version", "key", "config", "inputs", "reads", "writes", "counts", "dropped",
                "seconds", "memory_start_mb", "memory_peak_mb", "scene", "images"}
    results = [{"result": k, "value": v} for k, v in report.items() if k not in standard]
    if results:
        parts.append(_table(results))
    if isinstance(report.get("images"), list) and report["images"]:
        parts += [f"<h3>{html.escape(node['id'])}: images</h3>", _table(report["images"])]
    files = Path(node["folder"]) / "files"
    if node["status"] in ("ran", "cached") and files.is_dir():
        parts += [_png(p) for p in sorted(files.glob("*.png"))] + [_svg(p) for p in sorted(files.glob("*.svg"))]
    if parts:
        parts.insert(0, f"<h2>Node {html.escape(node['id'])}</h2>")
    return parts


SIDE_BY_SIDE_VIEWS = 3  # test views shown side by side in a comparison


def _side_by_side(shown: dict[str, dict], views: int = SIDE_BY_SIDE_VIEWS) -> list[str]:
    """Test views that every render entry in `shown` (label -> the entry a render node wrote) holds: the photo,
    each render and its error map."""
    import torch

    from recon3d.radiance.views import background_colour, read_on_background
    from recon3d.report.figures import side_by_side_png

    if not shown:
        return []
    first = next(iter(shown.values()))
    common = [v for v in first["views"] if all(v in e["views"] for e in shown.values())]
    background = torch.tensor(background_colour(first))
    parts = []
    for view in common[:views]:
        target, _ = read_on_background(first["views"][view]["target"], background)
        images = {label: read_rgb(e["views"][view]["render"]).astype(np.float32) / 255 for label, e in shown.items()}
        parts.append(_img(side_by_side_png(view, target.numpy(), images), f"test view {view}"))
    return parts


HELDOUT_SHOWN = 8  # held-out views shown beside their renders in the report


def images_section(node_id: str, metrics: dict, scene: Scene) -> list[str]:
    """One trained model scored on held-out views: its figures, PSNR against training time, and the held-out
    photos beside their renders and error maps."""
    from recon3d.report.figures import curves_png

    train = metrics.get("train", {})
    row = {"model": metrics["model"], "PSNR dB": metrics["psnr"], "SSIM": metrics["ssim"],
           "colour-corrected PSNR dB": metrics.get("psnr_cc"),
           "views": len(metrics["views"]), "resolution": metrics["protocol"]["resolution"],
           "steps": train.get("steps"), "train s": train.get("train_seconds"), "render FPS": metrics["fps"]}
    render = next((e for e in scene.metrics_of_kind("renders").values() if e["model"] == metrics["model"]), None)
    parts = [f"<h2 id='heldout'>Held-out views ({html.escape(node_id)})</h2>"]
    parts += _side_by_side({metrics["model_kind"]: render} if render else {}, views=HELDOUT_SHOWN)
    if render and len(metrics["views"]) > HELDOUT_SHOWN:
        parts.append(f"<p>the first {HELDOUT_SHOWN} of {len(metrics['views'])} held-out views; every render is in "
                     f"renders/{html.escape(render['model'])}/</p>")
    png = curves_png({metrics["model"]: {"method": metrics["model_kind"], "seed": metrics.get("seed"),
                                         "curve": train.get("curve", [])}})
    if png is not None:
        parts.append(_img(png, "time to PSNR: mean PSNR of the curve views against training time"))
    parts += [_table([row]), _table([{"view": k, **v} for k, v in metrics["views"].items()])]
    parts += ["<h3>Protocol</h3>", _protocol_table(metrics["protocol"])]
    return parts


def comparison_section(node_id: str, comparison: dict, scene: Scene) -> list[str]:
    """The table (mean +- sample std over seeds), time-to-PSNR curves, test views side by side, the protocol."""
    from recon3d.report.figures import curves_png
    from recon3d.stages.compare import FIGURES

    rows = []
    for row in comparison["table"]:
        seeds = "seed" if len(row["seeds"]) == 1 else "seeds"  # a column "seeds" holding 0 read as none
        cells = {"method": row["method"], seeds: ", ".join(str(s) for s in row["seeds"])}
        for name in FIGURES:
            if row.get(name) is not None:
                std = row[f"{name}_std"]
                cells[name] = _number(row[name]) + (f" ± {std:.2g}" if len(row["seeds"]) > 1 else "")
        if row.get("stopped_by"):
            cells["stopped by"] = ", ".join(str(s) for s in row["stopped_by"])
        rows.append(cells)
    parts = [f"<h2 id='comparison'>Comparison ({html.escape(node_id)})</h2>", _table(rows)]
    if comparison.get("stopped_before_budget"):  # equal time was asked for and not given
        parts.append("<p><b>Not at equal time:</b> " + html.escape("; ".join(comparison["stopped_before_budget"]))
                     + " (a step cap is each method's own, the time budget the same for all)</p>")
    png = curves_png(comparison["curves"])
    if png is not None:
        parts.append(_img(png, "time to PSNR: mean PSNR of the curve views against training time"))
    renders = {v["model"]: v for v in scene.metrics_of_kind("renders").values()}
    shown: dict[str, dict] = {}  # method -> its first seed's render entry
    for evaluation in comparison["evaluations"]:
        m = scene.metrics.get(evaluation, {})
        if m.get("model") in renders and m["model_kind"] not in shown:
            shown[m["model_kind"]] = renders[m["model"]]
    parts += _side_by_side(shown)
    parts += ["<h3>Protocol</h3>", _protocol_table(comparison["protocol"])]
    return parts


def _protocol_table(protocol: dict[str, Any]) -> str:
    """The protocol's fields, their values and what each means (`Protocol`'s field descriptions)."""
    from recon3d.radiance.protocol import Protocol

    fields = Protocol.model_fields
    return _table([{"field": k, "value": v, "meaning": (fields[k].description or "") if k in fields else ""}
                   for k, v in protocol.items()])


def sfm_section(scene: Scene) -> list[str]:
    """Registered images and the reprojection-error histogram of a sparse model."""
    from recon3d.report.sfm_figures import reprojection_histogram_svg

    if scene.points is None or not scene.poses:
        return []
    registered = [im.name for im in scene.images if im.name in scene.poses]
    parts = ["<h2>Sparse model</h2>",
             _table([{"images": len(scene.images), "registered": len(registered), "points": len(scene.points),
                      "mean reprojection px": float(scene.points.error.mean()) if len(scene.points) else None}])]
    missing = [im.name for im in scene.images if im.name not in scene.poses]
    if missing:
        parts.append(f"<p>not registered: {html.escape(', '.join(missing))}</p>")
    svg = reprojection_histogram_svg(scene.points.error)
    if svg is not None:
        parts.append(_inline_svg(svg, "reprojection errors"))
    return parts


def in_cache(path: str) -> tuple[str, ...]:
    """A file in a run's cache as the cache names it (node-key folder onwards), wherever the run folder is now."""
    parts = Path(path).parts
    return parts[len(parts) - parts[::-1].index("cache"):] if "cache" in parts else parts


def mesh_section(node_id: str, entry: dict, out: Path) -> list[str]:
    """The mesh: its picture (shaded and in colour), counts and where its files are in the run folder."""
    parts = [f"<h2>Mesh: {html.escape(node_id)}</h2>",
             _table([{"backend": entry["backend"], "model": f"{entry['model']} ({entry['model_kind']})",
                      "triangles": entry["triangles"], "vertices": entry["vertices"],
                      "watertight": entry["watertight"], "voxel": entry["voxel"],
                      "files": ", ".join(Path(p).name for p in entry["files"].values())}])]
    picture = out / Path(entry["preview"]).name
    if picture.is_file():
        parts.append(_img(picture.read_bytes(), "the mesh shaded and in its vertex colours, from a training camera "
                                                "(top) and an orbit camera"))
    return parts


def mesh_entries(scene: Scene | None, out: Path) -> dict[str, dict]:
    """The run's meshes: the pipeline's mesh nodes, and OUT/mesh.json that `recon3d mesh OUT` writes, when the model
    it meshed is still the run's (a later run into OUT may have trained another, or failed before training)."""
    entries = scene.metrics_of_kind("mesh") if scene is not None else {}
    extra = out / "mesh.json"
    if extra.is_file() and "mesh" not in entries:
        entry = read_json(extra)
        model = scene.radiance.get(entry.get("model", "")) if scene is not None else None
        if "model_path" not in entry or (model is not None and in_cache(model.path) == in_cache(entry["model_path"])):
            entries = {**entries, "mesh": entry}
    return entries


BRIEF_ITEMS = 8  # a per-item count (per image, per pair) longer than this shows as its size in the nodes table


def brief_counts(counts: dict | None) -> dict[str, str]:
    """A node's counts for an overview, each value as readable text: per-item dicts and lists longer than
    BRIEF_ITEMS as their size (the whole of them stays in the node's report JSON)."""
    return {k: f"({len(v)} items)" if isinstance(v, (dict, list)) and len(v) > BRIEF_ITEMS else _fmt(v, True)
            for k, v in (counts or {}).items()}


LABEL_KINDS = ("labels", "label_lifting")  # metrics entries that labels_section shows
MASK_VIEWS = 3  # rendered class masks shown per lifting node


def labels_section(node_id: str, entry: dict, out: Path) -> list[str]:
    """Detection / segmentation scores (COCO mAP, PR curves) or label lifting (classes per 3D element,
    held-out mIoU of the rendered class masks)."""
    parts = [f"<h2>Labels: {html.escape(node_id)}</h2>"]
    if entry["kind"] == "labels":
        rows = []
        for iou_type in ("bbox", "segm"):
            r = entry.get(iou_type)
            if r:
                ap50 = {name: c["AP50"] for name, c in r["per_class"].items() if c["AP50"] is not None}
                rows.append({"scored": iou_type, "images": r["n_images"], "truth": r["n_truth"],
                             "detections scored": r["n_pred"], "mAP": r["mAP"], "mAP50": r["mAP50"],
                             "mAP75": r["mAP75"], "AP50 per class": ap50})
        parts += [_table(rows)] if rows else ["<p>no held-out labeled images were scored</p>"]
        if rows and "score_conf" in entry:  # a trained detector's, not GrabCut's (its boxes are the truth's)
            parts.append(f"<p>On the held-out images every detection down to confidence {entry['score_conf']:g} is "
                         "scored, as COCO's and ultralytics' evaluations do; the labels kept are those at the "
                         "node's <code>conf</code>.</p>")
        parts += [_png(p) for p in sorted((out / node_id).glob("pr_*.png"))]
        return parts
    for key in ("points", "gaussians"):
        if key in entry:
            e = entry[key]
            parts.append(_table([{"labeled": key, "total": e["total"], "of an object": e["labeled"],
                                  "background": e["background"], "undecided": e["undecided"], **e["per_class"]}]))
    held = entry.get("gaussians", {}).get("heldout")
    if held:
        parts.append(_table([{"held-out views": len(held["views"]), "mIoU": held["mIoU"],
                              "mIoU objects": held["mIoU_objects"], "pixel accuracy": held["pixel_accuracy"],
                              **{f"IoU {k}": v["IoU"] for k, v in held["per_class"].items()}}]))
        parts += [_png(p) for p in sorted((out / "labels" / "masks").glob("*.png"))[:MASK_VIEWS]]
    return parts


def summary_section(out: Path, record: dict, reports: dict[str, dict], scene: Scene | None) -> list[str]:
    """What a reader wants first: images in / registered / dropped (each named with its reason), points and
    their reprojection error, the trained model's scores, time per stage, where each output file is and the
    command that made the run (its settings)."""
    rows: list[tuple[str, str]] = []
    dropped = dropped_images(reports.values())
    if scene is not None and scene.images:
        registered, names = sum(im.name in scene.poses for im in scene.images), {im.name for im in scene.images}
        poses_sought = registered or any(r.get("stage") in ("triangulate", "bundle_adjust") for r in reports.values())
        rows.append(("images", f"{len(names) + sum(n not in names for n in dropped)} in, "
                               + (f"{registered} registered, " if poses_sought else "") + f"{len(dropped)} dropped"))
    if scene is not None and scene.points is not None and len(scene.points):
        rows.append(("points", f"{len(scene.points):,}, mean reprojection error {scene.points.error.mean():.3f} px"))
    for node_id, m in (scene.metrics_of_kind("images") if scene is not None else {}).items():
        rows.append((f"{m['model_kind']} ({node_id})", f"PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f} on "
                                                       f"{count_views(len(m['views']), 'held-out')}"))
    for node_id, rep in reports.items():
        counts = rep.get("counts", {})
        if rep.get("stage") == "calibrate" and "images_used" in counts:
            rms = ", ".join(f"{side} {counts[f'{side}_rms_px']:.3f} px" for side in ("left", "right")
                            if f"{side}_rms_px" in counts) or f"{counts.get('rms_px', float('nan')):.3f} px"
            stereo = f"; stereo {counts['stereo']}" if "stereo" in counts else ""
            rows.append((f"calibration ({node_id})", f"RMS reprojection error {rms}{stereo}; {counts['images_used']}"
                                                     f" images used, {counts['images_dropped']} dropped"))
    for node_id, e in mesh_entries(scene, out).items():
        rows.append((f"mesh ({node_id})", f"{e['triangles']:,} triangles, "
                                          f"{'watertight' if e['watertight'] else 'not watertight'}"))
    for node_id, m in (scene.metrics.items() if scene is not None else []):
        if isinstance(m, dict) and "ate_rmse" in m:
            rows.append((f"against ground truth ({node_id})",
                         f"{'passed' if m.get('passed') else 'not passed'}: {m['images_compared']} cameras, ATE "
                         f"{100 * m['position_rmse_rel']:.3g} % of the camera extent, relative rotations within "
                         f"{m['relative_rotation_error_max_deg']:.2f}°"))
    seconds = {n["id"]: reports.get(n["id"], {}).get("seconds") for n in record["nodes"]}
    peaks = {n["id"]: reports[n["id"]]["memory_peak_mb"] for n in record["nodes"]
             if "memory_peak_mb" in reports.get(n["id"], {})}
    for node_id, e in mesh_entries(scene, out).items():  # `recon3d mesh OUT` ran after the pipeline, as no node
        if node_id not in seconds and e.get("seconds"):
            seconds[f"{node_id} (recon3d mesh)"] = e["seconds"]
            peaks[f"{node_id} (recon3d mesh)"] = round(e["peak_memory_mb"])
    timed = {k: v for k, v in seconds.items() if v}
    if timed:
        slowest = sorted(timed.items(), key=lambda kv: -kv[1])
        cached = {n["id"] for n in record["nodes"] if n["status"] == "cached"}
        earlier = sum(v for k, v in timed.items() if k in cached)
        rows.append(("time", f"{sum(timed.values()):.1f} s" + (
            f" to compute, {earlier:.1f} s of it in earlier runs (from the cache in this one)" if earlier else "")
            + ": " + ", ".join(f"{k} {v:.1f} s{_training_part(reports, k)}{' (cached)' if k in cached else ''}"
                               for k, v in slowest)))
    if peaks:
        node_id = max(peaks, key=peaks.get)
        rows.append(("memory", f"{peaks[node_id]:,} MB at the most, in node {node_id} (resident memory of the "
                               "process that ran it; a stage's worker processes are not counted)"))
    outputs = sorted(p for p in out.iterdir() if p.name not in BOOKKEEPING and not p.name.startswith("."))
    if outputs:
        links = ", ".join(f"<a href='{html.escape(p.name)}'>{html.escape(p.name)}{'/' if p.is_dir() else ''}</a>"
                          for p in outputs)
        rows.append(("outputs", f"in {html.escape(str(out.resolve()))}: {links}" if record.get("state") == "finished"
                     else f"files in {html.escape(str(out.resolve()))} (the run did not finish: some may be an earlier "
                     f"run's): {links}"))
    commands = [record.get("command")] + [e.get("command") for node_id, e in mesh_entries(scene, out).items()
                                          if node_id not in seconds]  # a later `recon3d mesh OUT`, as no node
    if any(commands):
        rows.append(("command", "<br>".join(f"<code>{html.escape(c)}</code>" for c in commands if c)))
    if scene is not None and scene.poses:
        rows.append(("look around", f"<code>recon3d view {html.escape(str(out))}</code>"))
    marked_up = ("outputs", "command", "look around")
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{v if k in marked_up else html.escape(v)}</td></tr>"
                   for k, v in rows)
    parts = [f"<table class='summary'>{body}</table>"]
    if dropped:
        parts.append(f"<h3>Dropped ({len(dropped)})</h3><ul>" + "".join(
            f"<li><b>{html.escape(name)}</b>: {html.escape(why)}</li>" for name, why in dropped.items()) + "</ul>")
    return parts


BOOKKEEPING = {"cache", "reports", "run.json", ".recon3d.lock", "report.html"}  # OUT's own files, not results


def _training_part(reports: dict, node_id: str) -> str:
    """' (training 1200.0 s)' for a node that trained a radiance field: its time budget counts the training steps
    only, not loading the views or the last evaluation, which the node's seconds include; a run resumed from an
    interrupted one's checkpoint trained in both, so its training time may exceed the node's seconds."""
    counts = reports.get(node_id, {}).get("counts", {})
    train, resumed = counts.get("train_seconds"), counts.get("resumed_from_step")
    if train is None:
        return ""
    earlier = "" if resumed is None else f", up to step {resumed} in an interrupted run"
    return f" (training {train:.1f} s{earlier})"


def pictures_section(scene: Scene | None) -> list[str]:
    """The cameras and points from above and in perspective."""
    from recon3d.geometry.rotation import up_from_cameras
    from recon3d.report.sfm_figures import scene_views_png

    if scene is None or not scene.poses:
        return []
    poses = np.stack(list(scene.poses.values()))
    points = scene.posed_points()
    has = points is not None and len(points)
    png = scene_views_png(poses, points.xyz if has else None, points.rgb if has else None, up_from_cameras(poses))
    return ["<h2>Cameras and points</h2>", _img(png, "registered cameras (red) and the sparse points in their "
                                                 "colours; up is the cameras' mean up")]


def nodes_section(record: dict, reports: dict[str, dict]) -> list[str]:
    """One row per node: its stage, status, seconds, peak memory of the process that ran it, counts as
    `name: value` lines and how many items it left out."""
    rows = []
    for n in record["nodes"]:
        rep = reports.get(n["id"], {})
        counts = brief_counts(rep.get("counts"))
        rows.append({"node": n["id"], "stage": rep.get("stage"), "status": node_status(n, rep),
                     "seconds": rep.get("seconds"), "peak MB": rep.get("memory_peak_mb"),
                     "counts": _fmt(counts),
                     "dropped": len(rep.get("dropped", []))})
    return ["<h2>Nodes</h2>", _table(rows)]


def raw_section(out: Path, record: dict, reports: dict[str, dict]) -> list[str]:
    """Each node's report JSON as it is on disk, folded."""
    parts = ["<h2>Raw node reports</h2>"]
    for n in record["nodes"]:
        if n["id"] in reports:
            text = json.dumps(reports[n["id"]], indent=1, default=str)
            parts.append(f"<details><summary>{html.escape(n['id'])} (reports/{html.escape(n['id'])}.json)</summary>"
                         f"<pre>{html.escape(text)}</pre></details>")
    return parts


STYLE = ("<style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:.5em 0}"
         "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
         "table.summary th{background:#f3f3f3;width:9em}pre{font-size:11px;background:#f8f8f8;padding:.5em;"
         "overflow-x:auto}details{margin:.3em 0}figure{display:inline-block;margin:.5em}</style>")


def write_report(out: str | Path) -> Path:
    """Write OUT/report.html from what the run folder holds; returns its path. Summary first, then pictures,
    then the tables, then each node's raw report, folded."""
    out = Path(out)
    record, reports, scene = load_run(out)
    state = f"failed: {record['error']}" if record["error"] else \
        "interrupted: the same command resumes it" if record.get("state") == "interrupted" else \
        "interrupted (or still running): the same command resumes it" if record.get("state") == "running" \
        else "finished"
    parts = [f"<h1>recon3d run: {html.escape(record['pipeline'])}</h1>", f"<p>{html.escape(state)}</p>"]
    parts += summary_section(out, record, reports, scene)
    parts += pictures_section(scene)
    if scene is not None:
        parts += splat_view_section(out, scene)
    comparisons = scene.metrics_of_kind("comparison") if scene is not None else {}
    for node_id, comparison in comparisons.items():
        parts += comparison_section(node_id, comparison, scene)
    evaluations = scene.metrics_of_kind("images") if scene is not None and not comparisons else {}
    for node_id, metrics in evaluations.items():
        parts += images_section(node_id, metrics, scene)
    meshes = mesh_entries(scene, out)
    for node_id, entry in meshes.items():
        parts += mesh_section(node_id, entry, out)
    if scene is not None:
        parts += sfm_section(scene)
    label_entries = {k: v for kind in LABEL_KINDS for k, v in scene.metrics_of_kind(kind).items()} \
        if scene is not None else {}
    for node_id, entry in label_entries.items():
        parts += labels_section(node_id, entry, out)
    parts += nodes_section(record, reports)
    for node in record["nodes"]:
        parts += _node_details(node, reports.get(node["id"], {}))
    if scene is not None:
        parts += ["<h2>Scene</h2>", _table([scene.summary()])]
        for node_id, metrics in scene.metrics.items():
            if node_id in comparisons or node_id in label_entries or node_id in evaluations or node_id in meshes:
                continue
            if isinstance(metrics, dict) and metrics.get("kind") == "depth_maps":  # the node's section shows them
                continue
            rows = metrics.items() if isinstance(metrics, dict) else [("value", metrics)]  # a plugin's scalar
            parts += [f"<h2>Metrics: {html.escape(node_id)}</h2>",
                      _table([{"metric": k, "value": v} for k, v in rows])]
    parts += raw_section(out, record, reports)
    title = f"recon3d report: {html.escape(record['pipeline'])}"
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>{STYLE}</head>" \
           f"<body>{''.join(parts)}</body></html>"
    return atomic_write(out / "report.html", lambda f: f.write(page), mode="w")
