"""`python -m minianimate ...`: the command line of `minianimate.toy.cli` (the program, not part of the library)."""
import sys

from minianimate.toy.cli import main

sys.exit(main())
