"""Run a pipeline: resolve keys, skip cached nodes, execute the rest through an executor.

Each node runs as `execute_node(task)`, a function of paths and plain values, so an executor may run it in
another process or on another machine that sees the same filesystem.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recon3d import stages
from recon3d.dag import cache
from recon3d.dag.executor import Executor, LocalExecutor, Progress
from recon3d.dag.lock import run_lock
from recon3d.dag.pipeline import Node
from recon3d.errors import Recon3dError, StageError
from recon3d.io.files import read_json, write_json
from recon3d.memory import PeakMemory, release_free_memory
from recon3d.scene import Scene
from recon3d.stages.base import StageContext

PUBLISH = "publish"  # a node's files for OUT (see StageContext.publish_dir)


@dataclass(frozen=True)
class NodeTask:
    """Everything a worker needs to run one node: plain values and paths."""

    node_id: str
    stage: str
    config: dict[str, Any]
    key: str
    folder: str
    inputs: tuple[tuple[str, str], ...]  # (parent node id, parent folder)
    input_seals: tuple[tuple[str, str], ...] = ()  # (parent node id, seal of its folder)


@dataclass
class RunResult:
    name: str
    out: Path
    order: list[str]
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    folders: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    set_aside: dict[str, str] = field(default_factory=dict)  # node id -> why its cached folder was not trusted
    command: str | None = None  # the command line that started the run, as typed
    withdrawn: list[str] = field(default_factory=list)  # nodes of the same pipeline's last run in OUT that this
    # one lacks (a compare with fewer seeds or methods), or of any run on other data: their files and reports are
    # taken out of OUT
    other_data: bool = False  # OUT held results of other data (another ingest key) before this run

    def scene(self, node_id: str | None = None) -> Scene:
        """The scene a node produced (the last node by default)."""
        return Scene.load(self.folders[node_id or self.order[-1]] / "scene")


Event = Callable[[str, str], None]  # (node id, "cached" | "running" | "done" | "failed" | "set aside: <why>")


def run_pipeline(name: str, nodes: list[Node], out: str | Path, executor: Executor | None = None,
                 on_event: Event | None = None, on_progress: Progress | None = None,
                 command: str | None = None) -> RunResult:
    """Run `nodes` (topologically sorted) into `out`; returns what ran and what came from the cache.

    Holds `out` for the whole run (recon3d.dag.lock), and keeps `out/run.json` up to date after every node,
    so a run killed at any moment leaves a record `recon3d show` reads (with `command`, how it was started, for
    the report). Paths the run records (node folders, renders, undistorted images) are absolute: a run started
    as `--out out/x` reads the same from anywhere."""
    out = Path(out).resolve()
    with run_lock(out):
        cache.remove_temporaries(out)
        return _run(name, nodes, out, executor or LocalExecutor(), on_event or (lambda node_id, status: None),
                    on_progress, command)


def _run(name: str, nodes: list[Node], out: Path, executor: Executor, notify: Event,
         on_progress: Progress | None, command: str | None) -> RunResult:
    result = RunResult(name=name, out=out, order=[n.id for n in nodes], command=command)
    keys: dict[str, str] = {}
    for n in nodes:
        fingerprint = n.stage.fingerprint(n.config) if n.stage.fingerprint else None
        keys[n.id] = cache.node_key(n.stage, n.config, [keys[p] for p in n.after], fingerprint)
        result.folders[n.id] = cache.node_dir(out, n.id, keys[n.id])
    result.other_data = _other_data(out, {n.id: keys[n.id] for n in nodes if n.stage.name == "ingest"})
    earlier = sorted(p.stem for p in (out / "reports").glob("*.json")) if result.other_data else \
        _earlier_nodes(out, name)

    inner, node_progress = executor.for_nodes(on_progress)  # what a node's stage gets, where it runs
    pending = {n.id: n for n in nodes}
    running: dict[Future, str] = {}
    seals: dict[str, str] = {}  # node id -> seal of its folder (recon3d.dag.cache), once complete
    failure: BaseException | None = None
    _write_run_record(result, None, running.values())
    starting = None  # the node being submitted: the local executor runs it inside submit
    try:
        while pending or running:
            for node_id, n in list(pending.items()):
                if failure is not None or any(p in pending or p in running.values() for p in n.after):
                    continue
                del pending[node_id]
                folder = result.folders[node_id]
                inputs = {p: seals[p] for p in n.after}
                verdict = cache.check(folder, inputs)
                if verdict.seal is not None:
                    seals[node_id] = verdict.seal
                    result.cached.append(node_id)
                    _publish(out, node_id, folder)
                    notify(node_id, "cached")
                    continue
                if verdict.problem is not None:
                    aside = cache.set_aside(folder)
                    result.set_aside[node_id] = f"{verdict.problem}; moved to {aside.relative_to(out)}"
                    notify(node_id, f"set aside: {result.set_aside[node_id]}")
                starting = node_id
                task = NodeTask(node_id, n.stage.name, n.config.model_dump(mode="json"), keys[node_id], str(folder),
                                tuple((p, str(result.folders[p])) for p in n.after), tuple(inputs.items()))
                _write_run_record(result, failure, [*running.values(), node_id])
                notify(node_id, "running")
                future = executor.submit(execute_node, task, node_progress, inner)
                running[future] = node_id
                if future.done():  # the local executor runs a node as it is submitted: record it before the next
                    break
            if failure is not None and not running:
                break
            if not running:
                continue
            for future in executor.wait_any(list(running)):
                node_id = running.pop(future)
                exc = future.exception()
                if exc is not None:
                    notify(node_id, "failed")
                    result.failed.append(node_id)
                    failure = failure or exc
                    continue
                result.executed.append(node_id)
                result.seconds[node_id], seals[node_id] = future.result()
                _publish(out, node_id, result.folders[node_id])
                notify(node_id, "done")
            _write_run_record(result, failure, running.values())
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM: the record says so (not `running`, as a killed run's would)
        _write_run_record(result, None, {*running.values(), *([starting] if starting else [])},
                          interrupted=True)
        raise
    _write_run_record(result, failure, (), done=True)
    if failure is not None:
        raise failure
    result.withdrawn = [node_id for node_id in earlier if node_id not in result.order]
    for node_id in result.withdrawn:  # once this run has finished: a failed one leaves the last one's results
        _withdraw(out, node_id)
    return result


def _other_data(out: Path, ingest_keys: dict[str, str]) -> bool:
    """Whether OUT holds what an ingest node of this run published from other data (or other ingest settings)."""
    for node_id, key in ingest_keys.items():
        report = out / "reports" / f"{node_id}.json"
        try:
            if report.is_file() and read_json(report).get("key") != key:
                return True
        except (OSError, Recon3dError):
            continue
    return False


def _earlier_nodes(out: Path, name: str) -> list[str]:
    """The nodes of OUT's last run when it ran pipeline `name` too (else none: a `splat` into an `sfm` run's folder
    keeps what the SfM published)."""
    try:
        record = read_json(out / "run.json")
        return [node["id"] for node in record["nodes"]] if record.get("pipeline") == name else []
    except (OSError, Recon3dError, KeyError, TypeError):
        return []


def _node_name(task: NodeTask) -> str:
    """`node 'check' (evaluate)`; `node 'gaussians'` where the node is named after its stage."""
    return f"node {task.node_id!r}" + ("" if task.node_id == task.stage else f" ({task.stage})")


def _unprefixed(problem: str, task: NodeTask) -> str:
    """A stage's message names its stage (`gaussians: 1 training view ...`) for callers from Python; after the
    node's name that would be said twice."""
    for name in (task.stage, task.node_id):
        if problem.startswith(f"{name}: "):
            return problem[len(name) + 2:]
    return problem


def execute_node(task: NodeTask, on_progress: Progress | None = None,
                 executor: Executor | None = None) -> tuple[float, str]:
    """Load the inputs, run the stage (its inner work through `executor`), check its writes, save scene +
    report, seal the folder. Returns (seconds, seal)."""
    stage = stages.get(task.stage)
    config = stage.config(**task.config)
    folder = Path(task.folder)
    cache.clear_partial(folder)
    folder.mkdir(parents=True, exist_ok=True)
    release_free_memory()  # what earlier nodes of this process freed, so this node's figures are its own
    scene, base = Scene(), None
    for i, (parent_id, parent_folder) in enumerate(task.inputs):
        parent = Scene.load(Path(parent_folder) / "scene")
        if i == 0:
            scene, base = parent, (parent, Path(parent_folder) / "scene")
        else:
            scene = scene.merge(parent, names=(task.inputs[0][0], parent_id))
    ctx = StageContext(node_id=task.node_id, workdir=folder / "files", publish_dir=folder / PUBLISH,
                       resume_dir=folder / cache.RESUME, on_progress=on_progress,
                       executor=executor or LocalExecutor())
    ctx.workdir.mkdir(exist_ok=True)
    start = time.perf_counter()
    try:
        with PeakMemory() as memory:  # this process's; a stage's tasks on a pool are processes of their own
            output = stage.run(scene, config, ctx)
    except Recon3dError as exc:
        raise type(exc)(f"{_node_name(task)}: {_unprefixed(exc.problem, task)}", exc.fix) from exc
    seconds = time.perf_counter() - start
    undeclared = [f for f in Scene.__dataclass_fields__
                  if f not in stage.writes and f != "reports" and getattr(output, f) is not getattr(scene, f)]
    if undeclared:
        raise StageError(f"stage {stage.name} changed {', '.join(undeclared)}, which it does not declare in `writes`",
                         "this is a bug in the stage: declare the field or leave it untouched")
    report = {
        "node": task.node_id,
        "stage": stage.name,
        "stage_version": stage.version,
        "key": task.key,
        "config": task.config,
        "inputs": [p for p, _ in task.inputs],
        "reads": list(stage.reads),
        "writes": list(stage.writes),
        "counts": ctx.counts,
        "dropped": ctx.dropped,
        "seconds": round(seconds, 4),
        "memory_start_mb": round(memory.start_mb),  # resident when the stage began: its inputs, the process
        "memory_peak_mb": round(memory.peak_mb),
        "scene": output.summary(),
    }
    clashes = report.keys() & ctx.results.keys()
    if clashes:
        raise StageError(f"stage {stage.name} records {', '.join(sorted(clashes))}, which the report already has",
                         "this is a bug in the stage: record it under another name")
    report.update(ctx.results)
    # the scene carries the report for later nodes without its list of dropped items (report.json has it):
    # lego's 4405 unmatched pairs made every later node's scene.json 0.4 MB longer to write and read
    carried = {**{k: v for k, v in report.items() if k != "dropped"}, "dropped_count": len(ctx.dropped)}
    output = output.replace(reports={**output.reports, task.node_id: carried})
    output.save(folder / "scene", base=base)  # what the stage left untouched is linked, not rewritten
    write_json(folder / "report.json", report)
    return seconds, cache.seal(folder, task.key, seconds, dict(task.input_seals))


def _publish(out: Path, node_id: str, folder: Path) -> None:
    """Copy the node's report to OUT/reports/<node>.json and its published files into OUT, first removing what the
    node's earlier result there (other data or settings in the same OUT) published and this one does not: OUT
    shows one run's results, not the renders of two scenes side by side."""
    previous = out / "reports" / f"{node_id}.json"
    if previous.is_file():
        _unpublish_stale(out, cache.node_dir(out, node_id, read_json(previous).get("key", "")) / PUBLISH,
                         folder / PUBLISH)
    report = read_json(folder / "report.json")
    write_json(out / "reports" / f"{node_id}.json", report)
    if (folder / PUBLISH).is_dir():
        # copies, not links: OUT's files are the user's (COLMAP opens OUT/database.db read-write), and a change
        # made in place through a link would reach the cache's sealed copy
        shutil.copytree(folder / PUBLISH, out, dirs_exist_ok=True)


def _unpublish_stale(out: Path, old: Path, new: Path | None) -> None:
    """Remove from OUT the files `old` (a node's earlier published folder, when it is still in the cache) holds and
    `new` does not (None: holds nothing), and the folders of OUT that this leaves empty."""
    if old == new or not old.is_dir():
        return
    for path in sorted(old.rglob("*"), reverse=True):  # a folder's files before the folder
        relative = path.relative_to(old)
        if path.is_file() and (new is None or not (new / relative).exists()):
            (out / relative).unlink(missing_ok=True)
        elif path.is_dir() and (out / relative).is_dir() and not any((out / relative).iterdir()):
            (out / relative).rmdir()


def _withdraw(out: Path, node_id: str) -> None:
    """Take a node's published files and its report out of OUT (its cached folder stays)."""
    report = out / "reports" / f"{node_id}.json"
    if report.is_file():
        _unpublish_stale(out, cache.node_dir(out, node_id, read_json(report).get("key", "")) / PUBLISH, None)
        report.unlink()


def _write_run_record(result: RunResult, failure: BaseException | None, running, done: bool = False,
                      interrupted: bool = False) -> None:
    """OUT/run.json: each node's status so far; `finished` once every node is done, `state` running / finished
    / failed / interrupted (Ctrl-C, SIGTERM; a record left `running` by a process that no longer holds OUT is a
    killed run, interrupted as well)."""
    running = set(running)
    nodes = []
    for node_id in result.order:
        status = ("cached" if node_id in result.cached else "ran" if node_id in result.executed
                  else "failed" if node_id in result.failed else
                  ("interrupted" if interrupted else "running") if node_id in running else "not run")
        node = {"id": node_id, "status": status, "folder": str(result.folders[node_id]),
                "seconds": result.seconds.get(node_id)}
        if node_id in result.set_aside:
            node["set_aside"] = result.set_aside[node_id]
        nodes.append(node)
    write_json(result.out / "run.json", {
        "pipeline": result.name,
        "command": result.command,
        "state": "failed" if failure is not None else "finished" if done else "interrupted" if interrupted
        else "running",
        "finished": done and failure is None,
        "error": None if failure is None else str(failure),
        "nodes": nodes,
    })
