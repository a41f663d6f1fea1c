"""Prefect flows: the PMG pipeline, retraining and batch personalisation.

The flows call the same `pmg` functions the DVC stages call (`pmg.stages.*`,
`pmg.registry`); nothing of the method lives here. What the flows add is
orchestration: per-scenario fan-out, retries of transient failures only, task
caching on inputs + source, the `gpu` tag and its concurrency limit, routing of
GPU work to GPU workers, artifacts for the dashboard, schedules.

- `flows.tasks`: the tasks over the stage table (`pmg.stages.table`, the
  stages `dvc repro` runs), the retry condition and the cache policy (each
  task a few lines calling `pmg`).
- `flows.pipeline`: `pipeline_flow` (prepare -> ... -> report) and
  `gpu_stage_flow` (one GPU stage for one scenario, deployed on the `gpu` queue).
- `flows.retrain`: `retrain_flow` (prepare, retrain, evaluate, register,
  promote) and its `register_flow`.
- `flows.batch`: `batch_flow` (personalise (scenario, user, target) pairs with
  each scenario's `production` adapter).
- `flows.deploy`: work pool, queues, the `gpu` concurrency limit, the
  zombie-run automation and the deployments (`python -m flows.deploy --help`).
- `flows.launch`: starts the Prefect server and workers (`make prefect-server`,
  `make worker`), refusing an API open beyond this machine without an auth string.
"""
