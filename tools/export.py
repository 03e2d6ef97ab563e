#!/usr/bin/env python3
"""``python tools/export.py`` from a checkout: the same as the installed command
(:mod:`kwsd_tools.export`)."""

import sys

from kwsd_tools.export import main

if __name__ == "__main__":
    sys.exit(main())
