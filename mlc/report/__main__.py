"""Entry point of ``python -m mlc.report``."""

from mlc.report.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
