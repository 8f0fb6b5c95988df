"""``mlc report``: tables and figures from tracked runs (the options live in ``mlc.report.cli``)."""

import sys

from mlc.report.cli import main

if __name__ == "__main__":
    sys.exit(main())
