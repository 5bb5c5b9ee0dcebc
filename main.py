"""Entry point: `python main.py [command]` (the commands: worker/cli.py, or `--help`)."""
import sys

from worker.cli import main

if __name__ == "__main__":
    sys.exit(main())
