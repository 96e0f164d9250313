"""The pipeline runner: pipelines as YAML, a content-hash cache per node, executors (local, Dask)."""
