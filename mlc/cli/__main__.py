"""``python -m mlc.cli``: what the ``mlc`` console script runs."""

import sys

from mlc.cli import main

sys.exit(main())
