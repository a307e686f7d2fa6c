import sys

from qrt.cli import entry

sys.exit(entry())
