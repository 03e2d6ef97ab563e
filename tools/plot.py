#!/usr/bin/env python3
"""``python tools/plot.py`` from a checkout: the same as the installed command
(:mod:`kwsd_tools.plot`)."""

import sys

from kwsd_tools.plot import main

if __name__ == "__main__":
    sys.exit(main())
