#!/usr/bin/env python3
"""``python tools/make_stream.py`` from a checkout: the same as the installed command
(:mod:`kwsd_tools.make_stream`)."""

import sys

from kwsd_tools.make_stream import main

if __name__ == "__main__":
    sys.exit(main())
