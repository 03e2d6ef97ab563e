#!/usr/bin/env python3
"""``python tools/benchmark_wordfinder.py`` from a checkout (:mod:`kwsd_tools.benchmark_wordfinder`)."""

import sys

from kwsd_tools.benchmark_wordfinder import main

if __name__ == "__main__":
    sys.exit(main())
