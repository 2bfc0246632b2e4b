import sys

from crossmae.cli import main

sys.exit(main())
