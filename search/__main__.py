"""``python -m search``: the command line (search/cli.py)."""

import os
import sys

from search.cli import main

code = main()
# Every file the command wrote is closed and Ray is shut down by now. Skip the interpreter's
# teardown: with torch (a CUDA build) imported it takes ~3 s on a 2-core machine and does nothing
# a finished command needs. An exception above still exits the normal way, with its traceback.
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
