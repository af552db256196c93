import sys

from vantage_algorithms.container import main

sys.exit(main())
