#!/usr/bin/env python3
"""``python tools/soak.py`` from a checkout: the same as the installed command
(:mod:`kwsd_tools.soak`)."""

import sys

from kwsd_tools.soak import main

if __name__ == "__main__":
    sys.exit(main())
