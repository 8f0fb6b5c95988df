"""``python -m mlc.report``: tracked training runs turned into the answers a paper needs.

A loss comparison is only an answer once it says how much of a difference is seed noise. This
package reads the runs from the MLflow store (never from console logs), groups them (by loss,
backbone, ... ), and writes, into one directory:

- ``table.{md,csv,tex}``: mean ± std over seeds per group, with n, best mean in bold;
- ``differences.{md,csv,tex}`` (with ``--baseline``): per-seed paired differences to a baseline
  group with a 95% Student-t interval, and a verdict that never calls noise a win;
- figures: λ against the negative ratio (and the best λ per ratio), learning curves of the
  monitored metric, mean predicted probabilities of positive/negative labels during training,
  precision-recall curves and per-class AP from the runs' scores files;
- ``report.md``: an index of all of it, with the command line, the store and every note.

Unless ``--no-log``, the directory is also logged as a report run (``mlc.kind=report``) in the
same experiment, so the answer lives next to the runs it came from.

Modules, one job each: ``runs`` (everything that talks to MLflow), ``stats`` (pure functions on
run records), ``tables`` (Markdown/CSV/LaTeX text), ``figures`` (matplotlib PNGs), ``build`` (the
report from the records), ``cli`` (options and one-line errors); ``lambda_study`` (best λ against the
negative ratio from a λ search and its re-runs over seeds, ``python -m mlc.report.lambda_study``).
"""

from mlc.report.cli import main

__all__ = ["main"]
