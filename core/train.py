"""`python -m core.train ...` and `torchrun ... -m core.train ...`: the training command line (core.runs.cli).

The entry point sits above every layer of core/ and nothing imports it; the engine it runs is core.training.
"""
import sys

from core.runs.cli import main

if __name__ == "__main__":
    sys.exit(main())
