"""``python -m bench``: run the scale benchmark (see bench/run.py)."""

from bench.run import main

main()
