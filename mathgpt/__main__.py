import sys

from mathgpt.cli import main

sys.exit(main())
