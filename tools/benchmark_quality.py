#!/usr/bin/env python3
"""``python tools/benchmark_quality.py`` from a checkout: the same as the installed command
(:mod:`kwsd_tools.benchmark_quality`)."""

import sys

from kwsd_tools.benchmark_quality import main

if __name__ == "__main__":
    sys.exit(main())
