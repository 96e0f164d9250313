"""The `recon3d` command: parses arguments and calls the library, nothing else."""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from recon3d.errors import ConfigError, Recon3dError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="recon3d: photos in; cameras, a sparse model, radiance fields and labels out.")


def _console(stderr: bool = False) -> Console:
    """Lines are not broken where a terminal would not break them: into a file or a pipe (a log, `| grep`) rich
    would wrap at 80 columns; there a table gets 160 (or $COLUMNS) and a line of text is never wrapped."""
    stream = sys.stderr if stderr else sys.stdout
    wide = None if stream.isatty() or "COLUMNS" in os.environ else 160
    return Console(stderr=stderr, soft_wrap=True, width=wide)


console = _console(stderr=True)
typed: str | None = None  # the command line as the user typed it (set by `main`), recorded in OUT/run.json


@app.command()
def run(
    pipeline: Annotated[str, typer.Argument(help="pipeline YAML file, or a name in pipelines/ (e.g. demo)")],
    data: Annotated[Path | None, typer.Option("--data", help="input folder for the ingest node(s)")] = None,
    out: Annotated[Path, typer.Option("--out", help="run folder: cache/, reports/, report.html")] = Path("out/run"),
    set_: Annotated[list[str] | None, typer.Option("--set", help="node.key=value config override")] = None,
    executor: Annotated[str, typer.Option(help="where nodes run: local (in process) or dask")] = "local",
    scheduler: Annotated[str | None, typer.Option(help="dask: address of a running scheduler "
                                                  "(tcp://HOST:8786); none starts a LocalCluster")] = None,
    workers: Annotated[int | None, typer.Option(help="dask: LocalCluster worker processes (default: cores)")] = None,
):
    """Run a pipeline; unchanged nodes come from the cache."""
    from recon3d.dag.pipeline import parse_sets

    options = {"scheduler": scheduler, "workers": workers}
    _run_with_progress(pipeline, data, out, parse_sets(set_ or []), executor, options)


def _run_with_progress(pipeline: str, data: Path | None, out: Path, sets: dict, executor: str,
                       options: dict | None = None):
    from recon3d.dag.pipeline import load_pipeline

    _check_data(data)
    name, nodes = load_pipeline(pipeline, sets, data)
    return _run_nodes(name, nodes, out, executor, options)


def _check_data(data: Path | None) -> None:
    """A --data that is not there (or a file that is no video) fails here, before OUT is made for the run."""
    if data is not None:
        from recon3d.stages.ingest import IngestConfig, data_root

        data_root(IngestConfig(path=str(data)))


def _run_nodes(name: str, nodes: list, out: Path, executor: str, options: dict | None = None, last_words: bool = True,
               model_kind: str | None = None):
    from recon3d.dag.executor import make_executor
    from recon3d.dag.lock import run_lock
    from recon3d.dag.runner import run_pipeline
    from recon3d.report.html import load_run, write_report

    runner_executor = make_executor(executor, **(options or {}))
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())
    with run_lock(out), Progress(*columns, console=console) as progress:  # held until the report is written
        data = next((Path(n.config.path).resolve() for n in nodes if n.stage.name == "ingest"), None)
        if model_kind:
            _keep_other_model_run(out, model_kind, data, progress.console)
        bar = progress.add_task(name, total=len(nodes))

        def on_event(node_id: str, status: str) -> None:
            if status.startswith("set aside: "):
                progress.console.print(f"{node_id}: cached result not trusted ({status.removeprefix('set aside: ')});"
                                       " recomputing", soft_wrap=True, markup=False)
                return
            progress.update(bar, description=f"{name}: {node_id} {status}")
            if status in ("cached", "done"):
                progress.advance(bar)

        def on_progress(node_id: str, done: int, total: int, text: str) -> None:
            progress.update(bar, description=f"{name}: {node_id} {done}/{total} {text}")

        try:
            result = run_pipeline(name, nodes, out, runner_executor, on_event, on_progress, command=typed)
        except Recon3dError:  # what the nodes before left out is often why this one failed (a copied photo)
            # the reports of the nodes this run finished: the others' in OUT are an earlier run's
            reports = load_run(out)[1] if (out / "run.json").is_file() else {}
            for node in nodes:
                if node.id in reports:
                    _print_dropped(node.id, reports[node.id].get("dropped", []))
            raise
        finally:
            runner_executor.close()
            if (out / "run.json").is_file():
                write_report(out)
    console.print(f"ran {len(result.executed)} node(s), {len(result.cached)} from cache")
    stale = _take_out_stale_renders(out, result)
    if stale:
        console.print(f"{', '.join(stale)}: what `recon3d render` / `recon3d mesh` wrote showed a model this run has "
                      "replaced; taken out (render or mesh again for this one)", soft_wrap=True, markup=False)
    if result.other_data:
        gone = _take_out_other_data(out)
        console.print(f"{out} held the results of other data: "
                      f"{', '.join(result.withdrawn + gone) or 'none left'} taken out of it (the cache keeps what its "
                      "nodes computed)", soft_wrap=True, markup=False)
    elif result.withdrawn:
        console.print(f"{out}'s last run also had {', '.join(result.withdrawn)}, which this one has not: their "
                      "results are taken out of it (the cache keeps them)", soft_wrap=True, markup=False)
    _print_show(out, set_aside=False)  # those were said as they happened
    print(f"report: {(out / 'report.html').resolve()}")
    if last_words:
        _print_view_hint(out)
    return result


def _not_while_a_run_holds(out: Path) -> None:
    """render, mesh and export read a finished run: while one is running into OUT, say so (its model is not there
    yet), rather than that OUT holds no model."""
    from recon3d.dag.lock import holder

    who = holder(out)
    if who is not None:
        raise Recon3dError(f"{out} is in use by a running recon3d ({who}): what it trains is not there until it "
                           "finishes", f"wait for it (`recon3d show {out}` says how far it is)")


def _take_out_other_data(out: Path) -> list[str]:
    """After a run on other data into OUT: an earlier model run's kept metrics and report, which no node published
    (`_take_out_stale_renders` takes the renders and meshes). Returns their names."""
    gone = []
    for kind in KEPT_KINDS:
        for name in (f"{kind}.metrics.json", f"{kind}.report.html"):
            if (out / name).is_file():
                (out / name).unlink()
                gone.append(name)
    return gone


def _print_view_hint(out: Path) -> None:
    if any((out / name).exists() for name in ("sparse", "transforms.json", "gaussians", "nerf")):  # posed cameras
        print(f"look around: recon3d view {out}")


def _pair(text: str, what: str) -> list[int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise Recon3dError(f"{what} {text!r} is not of the form COLSxROWS", f"e.g. {what} 9x6")
    return [int(p) for p in parts]


@app.command()
def calibrate(
    images: Annotated[list[str], typer.Argument(metavar="IMAGES",
                                                help="folder or quoted glob of board pictures ('calib/left*.jpg')")],
    out: Annotated[Path, typer.Option("--out", help="run folder; DIR/cameras.txt is the result")] = Path("out/calib"),
    target: Annotated[str, typer.Option(help="chessboard or charuco")] = "chessboard",
    corners: Annotated[str, typer.Option(help="chessboard inner corners, COLSxROWS")] = "9x6",
    squares: Annotated[str, typer.Option(help="ChArUco squares, COLSxROWS")] = "7x5",
    square: Annotated[float, typer.Option(help="side of a square (unit of poses and baseline)")] = 1.0,
    model: Annotated[str, typer.Option(help="COLMAP camera model to fit")] = "OPENCV",
    stereo: Annotated[str, typer.Option("--stereo", help="right-camera pictures, paired by sorted name")] = "",
    set_: Annotated[list[str] | None, typer.Option("--set", help="calibrate.key=value, e.g. calibrate.fix=[k3]")]
    = None,
):
    """Calibrate a camera (or a stereo pair) from board pictures: runs pipelines/calibrate.yaml."""
    import shutil

    from recon3d.dag.pipeline import parse_sets
    from recon3d.stages.calibrate import check_board_images

    if len(images) > 1:  # an unquoted glob, expanded by the shell (the --stereo one's files land here too)
        shown = ", ".join(images[:2]) + (", ..." if len(images) > 2 else "")
        raise Recon3dError(f"{len(images)} paths given where one folder or glob goes ({shown}): the shell expanded "
                           "an unquoted glob", "quote it: recon3d calibrate 'calib/left*.jpg' --stereo "
                           "'calib/right*.jpg', or give the folder")
    sets = parse_sets(set_ or [])
    sets["calibrate"] = {"images": images[0], "stereo_images": stereo, "target": target,
                         "corners": _pair(corners, "--corners"), "squares": _pair(squares, "--squares"),
                         "square": square, "camera_model": model, **sets.get("calibrate", {})}
    check_board_images(str(sets["calibrate"]["images"]), str(sets["calibrate"]["stereo_images"]))  # before OUT
    result = _run_with_progress("calibrate", None, out, sets, "local")
    shutil.copyfile(result.folders["calibrate"] / "files" / "cameras.txt", out / "cameras.txt")
    print(f"cameras: {(out / 'cameras.txt').resolve()}")


def _train_shortcut(pipeline: str, node: str, data: Path, out: Path, budget_min: float, steps: int | None,
                    sets: dict, sfm: bool = False) -> None:
    from recon3d.dag.pipeline import build_nodes, read_spec
    from recon3d.io.files import read_json
    from recon3d.photos import for_data, with_sfm
    from recon3d.radiance.protocol import count_views

    _check_data(data)
    if budget_min < 0:
        raise Recon3dError(f"--budget-min {budget_min:g}: a training time cannot be negative",
                           "give minutes (e.g. --budget-min 20), or 0 for no budget")
    if steps is not None and steps < 1:
        raise Recon3dError(f"--steps {steps}: training needs a step at least", "e.g. --steps 3000, or leave it out")
    given = {"budget_min": budget_min} if budget_min else {}
    if steps is not None:
        given["steps"] = steps
    sets[node] = {**given, **sets.get(node, {})}
    spec, where = read_spec(pipeline)
    name, nodes = build_nodes(with_sfm(spec) if sfm else for_data(spec, data), where, sets, data)
    _run_nodes(name, nodes, out, "local", last_words=False, model_kind=node)
    evaluated = read_json(out / "reports" / "evaluate.json")
    if evaluated.get("skipped"):  # trained on every photo: the model is there, no score
        console.print(f"evaluate: skipped, {evaluated['skipped']}")
        _print_view_hint(out)
        return
    metrics = read_json(out / "metrics.json")
    console.print(f"test PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f} over "
                  f"{count_views(len(metrics['views']))}; "
                  f"render {metrics['fps']:.1f} FPS")
    print(f"metrics: {(out / 'metrics.json').resolve()}")
    _print_view_hint(out)


KEPT_KINDS = ("gaussians", "nerf", "compare")  # <kind>.metrics.json / .report.html: an earlier model run's, kept


def _keep_other_model_run(out: Path, kind: str, data: Path | None, terminal: Console) -> None:
    """A `splat` into the folder of a `nerf` run on the same data (to reuse its SfM), or the reverse, or a `compare`
    there, would replace that run's `metrics.json` and `report.html`: they are kept as `<its model>.metrics.json`
    and `<its model>.report.html` (the report holds its images, so it stays whole; its links to metrics.json
    follow) and the terminal says so. A run on other data replaces them, as any run does."""
    from recon3d.io.files import read_json

    try:
        metrics = read_json(out / "metrics.json")
        earlier, on = metrics.get("model_kind"), metrics.get("protocol", {}).get("data")
    except (OSError, Recon3dError, AttributeError):  # no metrics there, or not a run's
        return
    if earlier is None or earlier == kind or (data is not None and on is not None and Path(on).resolve() != data):
        return
    kept = []
    for name in ("metrics.json", "report.html"):
        if (out / name).is_file():
            (out / name).replace(out / f"{earlier}.{name}")
            kept.append(f"{earlier}.{name}")
    page = out / f"{earlier}.report.html"
    if page.is_file():  # its links to the metrics it came with
        page.write_text(page.read_text().replace("href='metrics.json'>metrics.json<",
                                                 f"href='{earlier}.metrics.json'>{earlier}.metrics.json<"))
    terminal.print(f"{out} held a {earlier} run: its results are kept as {' and '.join(kept)}", soft_wrap=True,
                   markup=False)


def _sets(set_: list[str] | None) -> dict:
    from recon3d.dag.pipeline import parse_sets

    return parse_sets(set_ or [])


_DATA = Annotated[Path, typer.Option("--data", help="a folder of photos (structure from motion runs first), or posed "
                                      "data: a nerfstudio / Blender folder or a COLMAP project")]
_BUDGET = Annotated[float, typer.Option("--budget-min", help="stop training after M minutes (still renders and "
                                        "evaluates); 0 = no budget")]
_STEPS = Annotated[int | None, typer.Option("--steps", help="training steps (default: the preset's)")]
_SETS = Annotated[list[str] | None, typer.Option("--set", help="node.key=value config override")]
_SFM = Annotated[bool, typer.Option("--sfm", help="structure from motion first even when the data carries poses "
                                    "(set aside, as `recon3d run sfm` does; its check compares with ground_truth/)")]


@app.command()
def splat(data: _DATA, out: Annotated[Path, typer.Option("--out", help="run folder")] = Path("out/splat"),
          budget_min: _BUDGET = 0.0, steps: _STEPS = None, set_: _SETS = None, sfm: _SFM = False):
    """Train 3D Gaussian splatting, render and score the test views: runs pipelines/gaussians.yaml (after
    pipelines/sfm.yaml when --data is a folder of photos, or with --sfm)."""
    _train_shortcut("gaussians", "gaussians", data, out, budget_min, steps, _sets(set_), sfm)


@app.command()
def nerf(data: _DATA, out: Annotated[Path, typer.Option("--out", help="run folder")] = Path("out/nerf"),
         budget_min: _BUDGET = 0.0, steps: _STEPS = None, set_: _SETS = None, sfm: _SFM = False):
    """Train the voxel-grid NeRF, render and score the test views: runs pipelines/nerf.yaml (after
    pipelines/sfm.yaml when --data is a folder of photos, or with --sfm)."""
    _train_shortcut("nerf", "nerf", data, out, budget_min, steps, _sets(set_), sfm)


@app.command()
def render(
    run_dir: Annotated[Path | None, typer.Argument(help="a run folder holding a trained model (the --out of "
                                                   "recon3d splat or recon3d nerf)")] = None,
    model: Annotated[Path | None, typer.Option("--model", help="the same run folder, as an option")] = None,
    views: Annotated[str, typer.Option(help="test, train or all")] = "test",
    orbit_frames: Annotated[int, typer.Option(help="frames of an orbit video (0 = none)")] = 0,
    device: Annotated[str, typer.Option(help="torch device")] = "cpu",
    node: Annotated[str, typer.Option(help="which trained model, by its node (gaussians-s1, nerf-s0 of a compare "
                                      "run); default: the last trained")] = "",
):
    """Render views of the model(s) in a finished run into RUN/renders/: `recon3d render OUT --views train`."""
    from pydantic import ValidationError

    from recon3d.dag.lock import run_lock
    from recon3d.report.html import load_run
    from recon3d.stages import render as render_stage
    from recon3d.stages.base import StageContext

    if (run_dir is None) == (model is None):
        raise Recon3dError("give the run folder once" if model else "which run? give its folder",
                           "e.g. `recon3d render out/splat --views test`")
    model = (run_dir or model).resolve()  # the renders' paths go into the scene: absolute, read from anywhere
    _not_while_a_run_holds(model)
    try:
        cfg = render_stage.RenderConfig(model=node, views=views, orbit_frames=orbit_frames, device=device)
    except ValidationError as exc:
        error = exc.errors()[0]
        option = "--" + str(error["loc"][0]).replace("_", "-")
        raise Recon3dError(f"{option} {error['input']!r}: {error['msg'][0].lower()}{error['msg'][1:]}",
                           "see recon3d render --help") from None
    _, _, scene = load_run(model)
    if scene is None or not scene.radiance:
        raise Recon3dError(f"{model} holds no trained radiance model",
                           "give the --out folder of `recon3d splat` or `recon3d nerf`")
    if node and node not in scene.radiance:
        raise Recon3dError(f"--node {node}: {model} holds no model of that node",
                           f"give one of: {', '.join(scene.radiance)}")
    # its working files (the photos at the model's resolution) in the run's cache/, not among its outputs
    ctx = StageContext(node_id=f"render-{views}", workdir=model / "cache" / f"recon3d-render-{views}",
                       publish_dir=model)
    with run_lock(model):  # it writes into the run folder
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        started = time.time()
        rendered = render_stage.run(scene, cfg, ctx).metrics.get(ctx.node_id)
        if rendered is not None:
            _note_rendered(model, rendered["model"], scene.radiance[rendered["model"]].path, started)
    if rendered is None:  # skipped: a model trained on every photo holds out none
        raise Recon3dError(f"{model}: the model holds out no test views (trained with holdout_every 0)",
                           "render its training views: --views train (or all)")
    others = [n for n in scene.radiance if n != rendered["model"]]
    console.print(f"rendered {len(rendered['views'])} {views} views of {rendered['model']} at {rendered['fps']:.1f} "
                  "FPS" + (f" (the run also holds {', '.join(others)}: --node NAME renders one)" if others else ""),
                  soft_wrap=True, markup=False)
    renders = (model / "renders" / rendered["model"]).resolve()
    print(f"renders: {renders}")
    if orbit_frames:
        print(f"orbit: {renders / 'orbit.mp4'} ({orbit_frames} frames)")


RENDERED = "rendered.json"  # OUT/renders/<node>/: what `recon3d render` wrote there, of which model


def _note_rendered(out: Path, node: str, model_path: str, started: float) -> None:
    """Record the files `recon3d render` wrote into OUT/renders/<node>/ (since `started`) and the model they show,
    so that a later run that trains another model there takes them out (`_take_out_stale_renders`)."""
    from recon3d.io.files import read_json, write_json

    folder = out / "renders" / node
    record = folder / RENDERED
    try:
        earlier = read_json(record) if record.is_file() else {}
    except (OSError, Recon3dError):
        earlier = {}
    files = set(earlier.get("files", [])) if earlier.get("model_path") == model_path else set()
    files |= {p.relative_to(out).as_posix() for p in folder.rglob("*")
              if p.is_file() and p.name != RENDERED and p.stat().st_mtime >= started - 1}
    write_json(record, {"model_path": model_path, "files": sorted(files)})


def _take_out_stale_renders(out: Path, result) -> list[str]:
    """After a run into OUT: what an earlier `recon3d render OUT` or `recon3d mesh OUT` wrote of a model that is no
    longer the run's (retrained, gone, or of other data), except the files this run's own nodes published again.
    Returns what was cleaned (renders/<node>, mesh)."""
    from recon3d.io.files import read_json

    models = result.scene().radiance
    cleaned = []
    records = [*((r, f"renders/{r.parent.name}") for r in sorted((out / "renders").glob(f"*/{RENDERED}"))),
               *([(out / "mesh.json", "mesh")] if (out / "mesh.json").is_file() else [])]
    for record, name in records:
        try:
            entry = read_json(record)
        except (OSError, Recon3dError):
            continue
        node = record.parent.name if record.name == RENDERED else entry.get("model", "")
        if not (result.other_data or ("model_path" in entry and _replaced(out, models, node, entry["model_path"]))):
            continue
        files = entry.get("files", [])  # rendered.json: paths relative to OUT; mesh.json: format -> absolute path
        for path in (files.values() if isinstance(files, dict) else files):
            relative = Path(path).name if isinstance(files, dict) else path
            if not any((folder / "publish" / relative).is_file() for folder in result.folders.values()):
                (out / relative).unlink(missing_ok=True)
        if entry.get("preview"):
            (out / Path(entry["preview"]).name).unlink(missing_ok=True)
        record.unlink()
        if record.name == RENDERED:  # the render folders emptied
            for folder in sorted((p for p in record.parent.rglob("*") if p.is_dir()), reverse=True):
                if not any(folder.iterdir()):
                    folder.rmdir()
        cleaned.append(name)
    return cleaned


def _replaced(out: Path, models: dict, node: str, model_path: str) -> bool:
    """Whether the model at `model_path` (trained by `node`) is no longer what OUT holds of that node."""
    from recon3d.report.html import in_cache

    if node in models:  # trained by this run: the same model, or another
        return in_cache(models[node].path) != in_cache(model_path)
    return not (out / "reports" / f"{node}.json").is_file()  # another command's (a nerf beside a splat): replaced
    # once its node's results left OUT


@app.command("export")
def export_command(
    run_dir: Annotated[Path, typer.Argument(help="a run folder (the --out of recon3d run / splat / nerf)")],
    fmt: Annotated[str, typer.Option("--format", help="nerfstudio (images, transforms.json with relative paths, "
                                     "sparse_pc.ply), colmap (sparse/0 + images), ply, splat or spz (the Gaussians)")],
    to: Annotated[Path, typer.Option("--to", help="folder to write into (created)")],
):
    """Write a finished run as a folder another tool opens: `--format nerfstudio` for `ns-train splatfacto --data
    DIR`, `colmap` for COLMAP's GUI, `ply` / `splat` / `spz` for splat viewers. The folder can be moved."""
    from recon3d.exports import export_run

    _not_while_a_run_holds(run_dir)
    written = export_run(run_dir, fmt, to)
    source = ""
    if fmt.lower() in ("ply", "splat", "spz"):  # a compare run holds one model per method and seed
        from recon3d.report.html import load_run
        from recon3d.report.web_splat import gaussians_folder

        scene = load_run(run_dir)[2]
        chosen = gaussians_folder(run_dir, scene).name
        others = [n for n, m in scene.radiance.items() if m.kind == "gaussians" and n != chosen]
        source = f" of {chosen}" + (f" (the first of {chosen}, {', '.join(others)})" if others else "")
    print(f"exported {fmt}{source}: " + ", ".join(str(p) for p in written))


@app.command()
def mesh(
    run_dir: Annotated[Path | None, typer.Argument(help="a finished run folder holding a trained model (the --out of "
                                                   "`recon3d splat` or `recon3d nerf`)")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="instead of a run: photos or posed data, trained first "
                                              "(pipelines/mesh.yaml)")] = None,
    out: Annotated[Path, typer.Option("--out", help="run folder, with --data")] = Path("out/mesh"),
    backend: Annotated[str, typer.Option(help="tsdf (fused rendered depth) or poisson")] = "tsdf",
    budget_min: _BUDGET = 0.0, steps: _STEPS = None, set_: _SETS = None,
):
    """Mesh a trained model: OUT/mesh.ply, .obj, .glb (vertex colours) and OUT/mesh.png. `recon3d mesh OUT` meshes
    the model of a finished run (or the depth map of `recon3d calibrate --stereo`); `recon3d mesh --data photos/
    --out OUT` trains Gaussians first (after structure from motion for a folder of photos). A run with several
    models (`recon3d compare`) is meshed from the last trained: --set mesh.model=gaussians-s0 for another. Mesh
    settings: --set mesh.voxel=0.01, mesh.max_triangles=200000, ... (`recon3d stages` lists them)."""
    from typing import get_args

    from recon3d.stages.mesh import MeshConfig

    sets = _sets(set_)
    backends = get_args(MeshConfig.model_fields["backend"].annotation)  # the stage's own choices, named as typed
    if backend not in backends:
        raise Recon3dError(f"--backend {backend!r}: use {' or '.join(backends)}", f"e.g. --backend {backends[-1]}")
    sets["mesh"] = {"backend": backend, **sets.get("mesh", {})}
    if (run_dir is None) == (data is None):
        raise Recon3dError("give a finished run folder (recon3d mesh OUT) or --data (recon3d mesh --data photos/ "
                           "--out OUT), not both" if data else "nothing to mesh",
                           "e.g. `recon3d mesh out/splat`, or `recon3d mesh --data photos/ --out out/mesh`")
    if data is not None:
        _train_shortcut("mesh", "gaussians", data, out, budget_min, steps, sets)
        entry, where = _mesh_entry(out), out
    else:
        entry, where = _mesh_run(run_dir, sets), run_dir
    source = "the stereo depth maps" if entry["model_kind"] == "depth_maps" else f"the {entry['model_kind']} model"
    console.print(f"mesh: {entry['triangles']:,} triangles, {entry['vertices']:,} vertices, "
                  f"{'watertight' if entry['watertight'] else 'not watertight'} ({entry['backend']} of {source})")
    for path in (*entry["files"].values(), entry["preview"]):
        print(f"mesh: {(where / Path(path).name).resolve()}")


def _mesh_run(run_dir: Path, sets: dict) -> dict:
    """Mesh the model of a finished run into it (OUT/mesh.*, OUT/mesh.json) and rewrite its report."""
    run_dir = run_dir.resolve()  # its file paths go into mesh.json: absolute, so they read from anywhere
    from recon3d import stages as registry
    from recon3d.dag.lock import run_lock
    from recon3d.dag.pipeline import resolve_config
    from recon3d.io.files import write_json
    from recon3d.report.html import load_run, write_report
    from recon3d.stages.base import StageContext

    _not_while_a_run_holds(run_dir)
    _, _, scene = load_run(run_dir)
    if scene is None or not (scene.radiance or scene.metrics_of_kind("depth_maps")):
        raise Recon3dError(f"{run_dir} holds no trained radiance model (nor a stereo depth map)",
                           f"train one first: `recon3d splat --data DATA --out {run_dir}` (or `recon3d mesh --data "
                           "DATA`, which trains and meshes)")
    stage = registry.get("mesh")
    cfg = resolve_config(stage, "default", sets.pop("mesh"), "--set mesh")
    if sets:
        raise ConfigError(f"--set {next(iter(sets))}.…: `recon3d mesh OUT` runs one node, mesh",
                          "write the settings as --set mesh.KEY=VALUE")
    ctx = StageContext(node_id="mesh", workdir=run_dir / "cache" / "recon3d-mesh", publish_dir=run_dir)  # cf. render
    with run_lock(run_dir):  # it writes into the run folder
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        entry = stage.run(scene, cfg, ctx).metrics["mesh"]
        meshed = scene.radiance.get(entry["model"])  # which model file: a later run into OUT may train another
        write_json(run_dir / "mesh.json", {**entry, "command": typed,  # the report's command row names it too
                                           **({"model_path": meshed.path} if meshed is not None else {})})
        write_report(run_dir)
    return entry


def _mesh_entry(out: Path) -> dict:
    from recon3d.report.html import load_run

    _, _, scene = load_run(out)
    return scene.metrics["mesh"]


@app.command()
def compare(
    data: _DATA,
    out: Annotated[Path, typer.Option("--out", help="run folder: compare.json, report.html")] = Path("out/compare"),
    methods: Annotated[str, typer.Option(help="comma-separated: gaussians, nerf")] = "gaussians,nerf",
    budget_min: Annotated[float, typer.Option("--budget-min", help="training minutes per method and seed")] = 20.0,
    seeds: Annotated[str, typer.Option(help="comma-separated seeds; mean +- std over them")] = "0",
    holdout_every: Annotated[int | None, typer.Option("--holdout-every", help="data without a split: hold out "
                                                      "every n-th image for testing (default 8)")] = None,
    lpips_backbone: Annotated[Path | None, typer.Option("--lpips-backbone", help="LPIPS: torchvision AlexNet "
                                                        "weights (.pth), local")] = None,
    lpips_heads: Annotated[Path | None, typer.Option("--lpips-heads", help="LPIPS: the lpips package's "
                                                     "v0.1/alex.pth, local")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="node.key=value config override")] = None,
    executor: Annotated[str, typer.Option(help="local, or dask to train the branches side by side")] = "local",
    scheduler: Annotated[str | None, typer.Option(help="dask: a running scheduler's address")] = None,
    workers: Annotated[int | None, typer.Option(help="dask: LocalCluster worker processes")] = None,
):
    """Train several methods (and seeds) on the same data under one protocol; table and report in OUT."""
    from recon3d.compare import compare_pipeline, parse_list
    from recon3d.dag.pipeline import parse_sets

    seed_list = []
    for s in parse_list(seeds, "seeds"):
        if not s.isdigit():
            raise Recon3dError(f"--seeds {seeds!r}: {s!r} is not an integer >= 0", "e.g. --seeds 0,1,2")
        seed_list.append(int(s))
    if holdout_every is not None and holdout_every < 2:  # 1 holds out every view, 0 none: nothing to compare on
        raise Recon3dError(f"--holdout-every {holdout_every}: " + ("every image would be held out, none left to "
                           "train on" if holdout_every == 1 else "no image would be held out to compare on"),
                           "give 2 or more (8, the LLFF / Mip-NeRF 360 protocol, by default)")
    if (lpips_backbone is None) != (lpips_heads is None):
        raise Recon3dError("LPIPS needs both --lpips-backbone and --lpips-heads", "give both files, or neither")
    lpips = (lpips_backbone, lpips_heads) if lpips_backbone is not None else None
    _check_data(data)
    name, nodes = compare_pipeline(data, parse_list(methods, "methods"), seed_list, budget_min, holdout_every,
                                   parse_sets(set_ or []), lpips)
    _run_nodes(name, nodes, out, executor, {"scheduler": scheduler, "workers": workers}, model_kind="compare")
    _print_comparison(out)


def _print_comparison(out: Path) -> None:
    """The comparison in one line: each method's held-out PSNR and SSIM (mean +- std over its seeds)."""
    from recon3d.io.files import read_json
    from recon3d.radiance.protocol import count_views

    found = read_json(out / "compare.json")
    rows = [f"{r['method']} PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.4f}"
            + (f" (PSNR +- {r['psnr_std']:.2f} dB, sample std over {len(r['seeds'])} seeds)"
               if len(r["seeds"]) > 1 else "")
            for r in found["table"]]
    console.print(f"{'; '.join(rows)} on {count_views(found['protocol']['test_views'], 'held-out')}")
    for said in found.get("stopped_before_budget", []):  # equal time was asked for and not given
        console.print(f"not at equal time: {said}", soft_wrap=True, markup=False)


@app.command()
def report(out: Annotated[Path, typer.Argument(help="a run folder written by `recon3d run` (any pipeline)")]):
    """Rebuild OUT/report.html from what the run folder holds."""
    from recon3d.report.html import write_report

    print(f"report: {write_report(out).resolve()}")


@app.command()
def view(
    out: Annotated[Path, typer.Argument(help="a run folder (finished or not) with posed cameras")],
    port: Annotated[int, typer.Option(help="port; the next free one when it is taken")] = 8080,
    host: Annotated[str, typer.Option(help="address to listen on: 127.0.0.1 is this machine only; 0.0.0.0 opens "
                                      "the viewer to your network")] = "127.0.0.1",
):
    """Look around a run in the browser: cameras with their photos, points, Gaussians, the mesh; click a camera
    for its photo beside the model's render. Ctrl-C stops it."""
    import time

    from recon3d.viewer import load_view, serve

    shown = load_view(out)
    server = serve(shown, host, port)
    try:  # from here Ctrl-C is how a viewer is meant to stop, even as the lines below are printed: not an error
        if server.get_port() != port:
            console.print(f"port {port} is in use: serving on {server.get_port()}")
        if shown.state != "finished":
            console.print(f"the run is {shown.state}: showing what it holds so far")
        print(f"recon3d view: http://{'localhost' if host == '127.0.0.1' else host}:{server.get_port()}  "
              "(Ctrl-C stops)", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@app.command()
def stages():
    """List the stages and their config fields."""
    from pydantic import ValidationError

    from recon3d import stages as registry

    table = Table("stage", "v", "field", "default", "description")
    for name in registry.names():
        stage = registry.get(name)
        table.add_row(f"[bold]{name}[/]", str(stage.version), "", "", stage.summary)
        try:  # what a run with nothing set uses: a config's validators may fill fields (gaussians' mcmc preset)
            defaults = stage.config().model_dump()
        except ValidationError:  # a field without a default
            defaults = {field: info.default for field, info in stage.config.model_fields.items()}
        for field, info in stage.config.model_fields.items():
            table.add_row("", "", field, repr(defaults[field]), info.description or "")
    _console().print(table)


@app.command()
def show(out: Annotated[Path, typer.Argument(help="a run folder written by `recon3d run`")]):
    """Summarise a finished (or interrupted) run."""
    _print_show(out)


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="folder to write (new or empty): images/, transforms.json or sparse/0, "
                                        "ground_truth/")],
    rig: Annotated[str | None, typer.Option(help="orbit (default), forward_facing, random_in_box, handheld")] = None,
    model: Annotated[str | None, typer.Option(help="COLMAP camera model (default OPENCV)")] = None,
    images: Annotated[int, typer.Option(help="number of images")] = 24,
    points: Annotated[int, typer.Option(help="3D points sampled on the surfaces")] = 2000,
    width: Annotated[int, typer.Option(help="image width, px")] = 320,
    height: Annotated[int, typer.Option(help="image height, px")] = 240,
    seed: Annotated[int, typer.Option(help="seed of the world, rig and points")] = 0,
    fmt: Annotated[str | None, typer.Option("--format", help="nerfstudio (default) or colmap")] = None,
    labeled: Annotated[bool, typer.Option(help="three boxes of three classes with exact masks and boxes in "
                                          "labels.json (COCO); nerfstudio, orbit, PINHOLE")] = False,
    moving: Annotated[bool, typer.Option(help="with --labeled: a car moving through every other view")] = False,
):
    """Write a seeded synthetic scene with its exact ground truth."""
    from recon3d.synthetic.dataset import write_dataset, write_labeled_dataset

    if moving and not labeled:
        raise ConfigError("--moving needs --labeled", "add --labeled")
    if labeled and (rig, model, fmt) != (None, None, None):
        given = ", ".join(f"--{k} {v}" for k, v in (("rig", rig), ("model", model), ("format", fmt)) if v is not None)
        raise ConfigError(f"--labeled writes an orbit of PINHOLE views in nerfstudio's format: {given} cannot apply",
                          "leave it out, or leave out --labeled")
    for option, value, least, example in (("--images", images, 2, 24), ("--points", points, 1, 2000),
                                          ("--width", width, 16, 320), ("--height", height, 16, 240),
                                          ("--seed", seed, 0, 0)):
        if value < least:
            raise ConfigError(f"{option} {value}: give {least} or more" + (
                " (a scene to reconstruct needs two images at least)" if option == "--images" else ""),
                f"e.g. {option} {example}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not an empty folder: synth writes a whole dataset, and files of an "
                          "earlier one would stay beside it", "give a new folder, or remove that one")
    if labeled:
        truth = write_labeled_dataset(out, images, width, height, seed, moving, points)
    else:
        truth = write_dataset(out, fmt or "nerfstudio", rig or "orbit", model or "OPENCV", images, points, width,
                              height, seed)
    console.print("wrote " + ", ".join(f"{k}={v}" for k, v in truth.summary().items() if v) + f" to {out}")


def _print_show(out: Path, set_aside: bool = True) -> None:
    from recon3d.dag.lock import holder
    from recon3d.report.html import brief_counts, dropped_images, load_run, node_status

    record, reports, scene = load_run(out)
    console = _console()
    narrow = 14 if console.width < 120 else None  # in an 80-column terminal the counts keep half the width
    table = Table(Column("node", max_width=narrow), Column("status", max_width=narrow), Column("seconds", no_wrap=True),
                  Column("counts", ratio=1, overflow="fold"), title=f"run {record['pipeline']} in {out}", expand=True)
    for node in record["nodes"]:
        rep = reports.get(node["id"], {})
        stage = rep.get("stage", node["id"])
        counts = ", ".join(f"{k}={v}" for k, v in brief_counts(rep.get("counts")).items())
        table.add_row(node["id"] if stage == node["id"] else f"{node['id']} ({stage})", node_status(node, rep),
                      _short(rep.get("seconds")), counts)  # the stage only where it is not the node's name
    console.print(table)
    ordered = [reports.get(node["id"], {}) for node in record["nodes"]]
    first = dropped_images(ordered)  # the outcome line names each of these once, with the first node's reason: what
    # later nodes say of them follows from it (a photo features could not read is "not posed" to the trainer)
    for node, rep in zip(record["nodes"], ordered, strict=True):
        _print_dropped(node["id"], [d for d in rep.get("dropped", []) if d["item"] not in first])
    _print_outcome(out, ordered, finished=record.get("state") == "finished")
    for node in record["nodes"]:
        if set_aside and node.get("set_aside"):
            print(f"{node['id']}: cached result not trusted ({node['set_aside']}); recomputed")
    if record["error"]:
        console.print(f"[red]error:[/] {record['error']}")
    elif record.get("state") in ("running", "interrupted"):
        who = holder(out)
        console.print(f"still running ({who})" if who else
                        "[yellow]interrupted[/]: the run stopped before it finished; the same command resumes it")
    if scene is not None:
        console.print("scene: " + ", ".join(f"{k}={v}" for k, v in scene.summary().items() if v))


def _print_dropped(node_id: str, dropped: list[dict[str, str]], examples: int = 4) -> None:
    """What a node left out: each image with its reason (an unreadable photo, one SfM could not register), and
    of image pairs only how many; the whole list is in OUT/reports/<node>.json."""
    pairs = [d for d in dropped if " | " in d["item"]]
    by_reason: dict[str, list[str]] = {}
    for d in dropped:
        if " | " not in d["item"]:
            by_reason.setdefault(d["reason"], []).append(d["item"])
    for reason, items in by_reason.items():
        more = f" and {len(items) - examples} more" if len(items) > examples else ""
        print(f"{node_id}: left out {', '.join(items[:examples])}{more}: {reason}")
    if pairs:
        print(f"{node_id}: left out {len(pairs)} image pair(s) (reasons in reports/{node_id}.json)")


def _print_outcome(out: Path, reports: list[dict], examples: int = 6, finished: bool = True) -> None:
    """The run in two lines: every image it dropped, once, with the first reason a node gave (images sharing a
    reason named together, `examples` names in all), and the result files and folders in OUT."""
    from recon3d.report.html import BOOKKEEPING, dropped_images

    first = dropped_images(reports)
    if first:
        by_reason: dict[str, list[str]] = {}
        for item, reason in first.items():
            by_reason.setdefault(reason, []).append(item)
        groups, named = [], 0
        for reason, items in by_reason.items():
            shown = items[:max(1, examples - named)]
            named += len(shown)
            more = f" and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
            groups.append(f"{', '.join(shown)}{more} ({reason})")
        print(f"{len(first)} image(s) dropped: {'; '.join(groups)}")
    results = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir()
                     if p.name not in BOOKKEEPING and not p.name.startswith("."))
    if results:
        print(f"outputs in {out}: {', '.join(results)}" if finished else
              f"files in {out} (the run did not finish: some may be an earlier run's): {', '.join(results)}")


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else "" if value is None else str(value)


def main() -> None:
    """Entry point: user errors are one line on stderr and a non-zero exit, never a traceback."""
    global typed
    typed = shlex.join(["recon3d", *sys.argv[1:]])
    signal.signal(signal.SIGTERM, _terminated)
    try:
        code = app(standalone_mode=False)
    except Recon3dError as exc:
        print(f"recon3d: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        _interrupted()
    except typer.TyperException as exc:  # a usage error from typer's own copy of click: usage line + one line
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            print(f"recon3d: error: {exc.format_message()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"recon3d: error:{where}: {exc.strerror or exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:  # a bug, not the input: one line here, the traceback in a file it names
        print(f"recon3d: internal error: {type(exc).__name__}: {exc} — {_save_traceback()}; re-run the same "
              "command (finished nodes are cached), and report it with that file", file=sys.stderr)
        sys.exit(1)
    if code == 130:  # Ctrl-C: typer turns it into Exit(130), which standalone_mode=False returns
        _interrupted()


_stop = ("interrupted", 130)  # how a stop is said, and its exit code: Ctrl-C's unless SIGTERM came


def _terminated(signum, frame) -> None:
    """SIGTERM (`timeout`, `kill`, a job scheduler) stops a run as Ctrl-C does: the same unwinding, one line,
    the exit code of a process SIGTERM ended (143)."""
    global _stop
    _stop = ("stopped (SIGTERM)", 143)
    raise KeyboardInterrupt


def _interrupted() -> None:
    what, code = _stop
    print(f"recon3d: {what} — the same command resumes (finished nodes are cached, training goes on from its "
          "last checkpoint)", file=sys.stderr)
    sys.exit(code)


def _save_traceback() -> str:
    """Write the exception being handled to a file in the temporary folder; say where."""
    import tempfile
    import traceback

    with tempfile.NamedTemporaryFile("w", prefix="recon3d-error-", suffix=".txt", delete=False) as f:
        traceback.print_exc(file=f)
    return f"the traceback is in {f.name}"


if __name__ == "__main__":
    main()
