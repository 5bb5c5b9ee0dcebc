"""Entry point: `python main.py [run|once|demo|status|reanalyze|evaluate]` (see `--help`)."""
import sys

from worker.cli import main

if __name__ == "__main__":
    sys.exit(main())
