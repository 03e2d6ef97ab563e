#!/usr/bin/env python3
"""``python tools/slice.py`` from a checkout: the same as the installed command
(:mod:`kwsd_tools.slice`)."""

import sys

from kwsd_tools.slice import main

if __name__ == "__main__":
    sys.exit(main())
