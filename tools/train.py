#!/usr/bin/env python3
"""``python tools/train.py`` from a checkout: the same as the installed command
(:mod:`kwsd_tools.train`)."""

import sys

from kwsd_tools.train import main

if __name__ == "__main__":
    sys.exit(main())
