#!/usr/bin/env bash
# Re-makes experiments/report_example/report/ from scratch (about 4 minutes on 2 CPU cores):
# cb_bce against any_bce on the built-in digits data at 80% negatives, 3 seeds each, then `mlc report`.
set -euo pipefail
cd "$(dirname "$0")/../.."
export MLC_OUTPUTS=outputs/report_example          # its own MLflow store: the report sees these 6 runs only
rm -rf "$MLC_OUTPUTS" experiments/report_example/report
.venv/bin/mlc sweep loss=cb_bce,any_bce seed=0,1,2 dataset.negative_ratio=0.8 trainer.max_epochs=5
.venv/bin/mlc report --group-by loss --baseline cb_bce --output experiments/report_example/report
