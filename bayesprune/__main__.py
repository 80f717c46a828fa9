"""``python -m bayesprune``: the command line, as the ``bayesprune`` script runs it."""

import sys

from bayesprune._entry import main

if __name__ == "__main__":
    sys.exit(main())
