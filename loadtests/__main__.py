"""``python -m loadtests ...`` = ``backupplus loadtest ...``."""

import sys

from loadtests.runner import main

sys.exit(main(sys.argv[1:]))
