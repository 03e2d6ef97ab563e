#!/usr/bin/env python3
"""``python tools/benchmark.py`` from a checkout: the same as the installed command
(:mod:`kwsd_tools.benchmark`)."""

import sys

from kwsd_tools.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
