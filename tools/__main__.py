import sys

from bitmod.tools.cli import main

sys.exit(main())
