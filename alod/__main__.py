import sys

from alod.cli import main

sys.exit(main())
