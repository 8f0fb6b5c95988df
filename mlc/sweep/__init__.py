"""mlc's sweep machinery, moving here out of the Hydra plugin (hydra_plugins/mlc_sweepers); so far the planner."""
