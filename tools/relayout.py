#!/usr/bin/env python3
"""``python tools/relayout.py`` from a checkout: the same as the installed command
(:mod:`kwsd_tools.relayout`)."""

import sys

from kwsd_tools.relayout import main

if __name__ == "__main__":
    sys.exit(main())
