"""Reports: per-node JSON (written by the runner) and the run's single-file HTML report."""
