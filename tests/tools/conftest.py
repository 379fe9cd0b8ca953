"""The benchmarks in tools/ are scripts, not a package: their tests import them (and the
bench_common module they share) from that directory."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools"))
