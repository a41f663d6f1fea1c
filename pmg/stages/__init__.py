"""The stages: the only layer that knows paths, loads models and writes files.

- `catalogue`: where every stage reads and writes (the one place paths are built).
- `loaders`: the profile's models, by role (`llm`, `soft_llm`, captioner, generator,
  scorer, LPIPS), and the answer caches wrapped around them.
- one module per stage (`assets`, `prepare`, `zoo`, `describe`, `keywords`,
  `train_soft`, `generate`, `select`, `evaluate`, `train_soft_ablations`,
  `ablations`, `report`): read the inputs, load the models, call `pmg.method`
  / `pmg.evaluate`, write the outputs and the metrics; `personalize`: the
  whole chain for one pair, on the same stage functions.
- `table`: the stage table the CLI, the Prefect flows and the `dvc.yaml` check
  read, and `run_stage`, which runs a stage and records its timing.
- `deps`: the import graph (each stage's code deps; the layers check).

Import from the submodules: this package imports none of them.
"""
