import sys

from micro_sym.cli import main

sys.exit(main())
