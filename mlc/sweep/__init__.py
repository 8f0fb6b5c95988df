"""mlc's sweep machinery, one module per job; the Hydra plugin (``hydra_plugins/mlc_sweepers``) is a thin
adapter over it, and ``mlc reproduce`` plans with the same ``plan``.

- ``plan``: the studies a sweep makes (grid points, phases, search space, names, directions);
- ``loop``: ``SweepLoop``, the ask-and-tell loop that runs them on a launch callable (Hydra's launcher);
- ``trial``: ``TrialSpec``, the one message from the sweeper to a trial's training process;
- ``study``: Optuna storages, heartbeats, trial owners, dead trials taken over, fingerprints;
- ``summary``: what a sweep found and its outcome (the exit code), read from its studies;
- ``parent`` and ``callbacks``: the parent MLflow run, and Hydra's multirun callbacks around a sweep;
- ``workers``: ``mlc sweep --workers N``; ``pruning``: trials that report each epoch and stop early;
- ``optuna_api``: the few private parts of Optuna and Hydra that the above rely on, pinned by a test.
"""
