import sys

from qrt.cli import main

sys.exit(main())
