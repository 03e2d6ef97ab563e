#!/usr/bin/env python3
"""``python tools/benchmark_embedding.py`` from a checkout (:mod:`kwsd_tools.benchmark_embedding`)."""

import sys

from kwsd_tools.benchmark_embedding import main

if __name__ == "__main__":
    sys.exit(main())
