"""The dask executor: same output as local, cache respected, errors name their item, a killed worker is survived."""

import os
import pickle
import signal
import time

import numpy as np
import pytest

from recon3d.dag.dask_executor import DaskExecutor
from recon3d.dag.executor import LocalExecutor, make_executor
from recon3d.dag.pipeline import load_pipeline
from recon3d.dag.runner import run_pipeline
from recon3d.errors import ConfigError, DataError, StageError
from recon3d.scene import Features
from recon3d.stages import match
from recon3d.stages.base import StageContext
from recon3d.synthetic.dataset import write_dataset
from recon3d.synthetic.descriptors import descriptor_scene


@pytest.fixture(scope="module")
def dask2():
    executor = DaskExecutor(workers=2)
    yield executor
    executor.close()


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    data = tmp_path_factory.mktemp("rig") / "data"
    write_dataset(data, "nerfstudio", "handheld", "PINHOLE", n_images=8, n_points=300, width=320, height=240, seed=3)
    return data


def sfm(data, out, executor=None, on_progress=None):
    # COLMAP's matcher (its FAISS search), mapper and Ceres on one thread, so that two runs give the same
    # matches and poses to the last bit
    one_thread = {"num_threads": 1}
    name, nodes = load_pipeline("sfm", {"check": {"require_pass": False}, "match": one_thread,
                                        "triangulate": one_thread, "bundle_adjust": one_thread}, data)
    return run_pipeline(name, nodes, out, executor, on_progress=on_progress)


def assert_same_sfm(a, b):
    assert a.features.keys() == b.features.keys()
    for n in a.features:
        assert np.array_equal(a.features[n].keypoints, b.features[n].keypoints)
        assert np.array_equal(a.features[n].descriptors, b.features[n].descriptors)
    assert list(a.matches) == list(b.matches)
    assert all(np.array_equal(a.matches[p], b.matches[p]) for p in a.matches)
    assert list(a.two_view) == list(b.two_view)
    assert all(np.array_equal(a.two_view[p].inliers, b.two_view[p].inliers) for p in a.two_view)
    assert a.poses.keys() == b.poses.keys() and len(a.poses) == 8
    assert all(np.array_equal(a.poses[n], b.poses[n]) for n in a.poses)
    assert np.array_equal(a.points.xyz, b.points.xyz)


def test_dask_run_equals_local_and_reuses_the_cache(tmp_path, rig, dask2):
    local = sfm(rig, tmp_path / "local")
    events = []
    remote = sfm(rig, tmp_path / "dask", dask2, on_progress=lambda *e: events.append(e))
    assert sorted(remote.executed) == sorted(local.executed)  # every node ran (check and export side by side)
    assert_same_sfm(local.scene("bundle_adjust"), remote.scene("bundle_adjust"))
    assert (tmp_path / "dask" / "sparse" / "0" / "images.bin").is_file()  # published files reach OUT
    # progress of inner tasks comes back from the workers as events (asynchronously)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and ("features", 8, 8, "extract_image") not in events:
        time.sleep(0.1)
    assert ("features", 8, 8, "extract_image") in events
    assert any(e[0] == "match" and e[3] == "match_block" for e in events)
    again = sfm(rig, tmp_path / "dask", dask2)  # cached nodes are not sent to the cluster
    assert again.executed == [] and again.cached == again.order


@pytest.mark.parametrize("pairs", ["exhaustive", "retrieval"])
def test_match_blocks_on_dask_equal_local(tmp_path, dask2, pairs):
    """Matching blocks, and for retrieval the VLAD blocks and the rounds of covisible pairs, on Dask as in process."""
    scene, truth = descriptor_scene(12, keypoints=300, seed=2)
    cfg = match.MatchConfig(pairs=pairs, min_matches=5, retrieval_k=3, retrieval_window=1, retrieval_rounds=2)
    local_ctx = StageContext.standalone("match")
    local = match.run(scene, cfg, local_ctx)
    ctx = StageContext(node_id="match", workdir=tmp_path, executor=dask2)
    if pairs == "exhaustive":
        assert len(ctx.blocks(list(local.matches), 0)) == 8  # 66 pairs in ~4 blocks per worker
    else:
        assert local_ctx.counts["pairs_covisible"] > 0
    remote = match.run(scene, cfg, ctx)
    assert list(local.matches) == list(remote.matches)
    assert all(np.array_equal(local.matches[p], remote.matches[p]) for p in local.matches)
    a, b = next(iter(remote.matches))
    m = remote.matches[(a, b)]
    assert np.mean(truth[a][m[:, 0]] == truth[b][m[:, 1]]) > 0.99  # the synthetic truth: matches are right


def test_a_task_that_raises_names_its_pair(tmp_path, dask2):
    scene, _ = descriptor_scene(6, keypoints=200, seed=1)
    bad = scene.images[3].name
    features = dict(scene.features)
    features[bad] = Features(features[bad].keypoints, features[bad].descriptors[:, :64])  # corrupt: 64-byte rows
    ctx = StageContext(node_id="match", workdir=tmp_path, executor=dask2)
    with pytest.raises(StageError, match=r"match: match_block failed on the 1 pair\(s\) \S+ \| \S+"):
        match.run(scene.replace(features=features), match.MatchConfig(pairs_per_task=1), ctx)


def test_local_process_pool_equals_in_process(tmp_path, rig):
    """The command line's local executor runs a stage's tasks on a pool of processes: same scene as one by one."""
    pool = LocalExecutor(workers=2)
    try:
        assert_same_sfm(sfm(rig, tmp_path / "serial").scene("bundle_adjust"),
                        sfm(rig, tmp_path / "pool", pool).scene("bundle_adjust"))
        scene, _ = descriptor_scene(6, keypoints=200, seed=1)
        bad = scene.images[3].name
        features = dict(scene.features)
        features[bad] = Features(features[bad].keypoints, features[bad].descriptors[:, :64])
        ctx = StageContext(node_id="match", workdir=tmp_path / "bad", executor=pool)
        with pytest.raises(StageError, match=r"match: match_block failed on the 1 pair\(s\) \S+ \| \S+"):
            match.run(scene.replace(features=features), match.MatchConfig(pairs_per_task=1), ctx)
    finally:
        pool.close()
    assert make_executor("local").workers == (os.cpu_count() or 1)


def test_errors_cross_process_boundaries_whole():
    err = pickle.loads(pickle.dumps(DataError("image a.png is unreadable", "re-export it")))
    assert type(err) is DataError and err.problem == "image a.png is unreadable" and err.fix == "re-export it"


def test_a_killed_worker_is_survived_with_identical_output(tmp_path):
    scene, _ = descriptor_scene(40, keypoints=600, seed=4)
    cfg = match.MatchConfig(pairs="sequential", window=6, pairs_per_task=4)
    reference = match.run(scene, cfg, StageContext.standalone("match"))
    executor = DaskExecutor(workers=2)
    try:
        pids = executor.client.run(os.getpid)
        killed = []

        def kill_one(node_id, done, total, text):  # on the first completed task, while others are running
            if not killed:
                victim = sorted(pids.values())[0]
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)

        ctx = StageContext(node_id="match", workdir=tmp_path, executor=executor, on_progress=kill_one)
        result = match.run(scene, cfg, ctx)
        assert killed and killed[0] not in executor.client.run(os.getpid).values()  # the nanny replaced it
    finally:
        executor.close()
    assert list(result.matches) == list(reference.matches)
    assert all(np.array_equal(result.matches[p], reference.matches[p]) for p in reference.matches)


def test_connects_to_a_running_scheduler(dask2):
    address = dask2.client.scheduler.address
    executor = make_executor("dask", scheduler=address)
    try:
        assert executor.workers == 2
        assert executor.map(abs, [-1, 2, -3]) == [1, 2, 3]
    finally:
        executor.close()  # the client only: the cluster belongs to whoever started it


def test_bad_executor_options():
    with pytest.raises(ConfigError, match="unknown executor 'spark'"):
        make_executor("spark")
    with pytest.raises(ConfigError, match="executor local takes no workers"):
        make_executor("local", workers=2, scheduler=None)
    with pytest.raises(ConfigError, match="--workers 0"):
        make_executor("dask", workers=0)
    with pytest.raises(ConfigError, match="give one of them"):
        make_executor("dask", scheduler="tcp://127.0.0.1:8786", workers=2)
    # a port where nothing listens is said at once, not after the connect timeout (20 s by default)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler at 'tcp://127.0.0.1:1': nothing listens"):
        DaskExecutor("tcp://127.0.0.1:1")
    assert time.perf_counter() - start < 5
