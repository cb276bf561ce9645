"""`python -m launcher.doctor`: the doctor without the CLI around it."""

import sys

from launcher.doctor import main

if __name__ == "__main__":
    sys.exit(main())
