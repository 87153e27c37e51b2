"""`python -m detector`: the same entry point as the `pitstop-detector` console script."""

from detector.main import main

raise SystemExit(main())
