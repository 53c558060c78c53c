"""lmweb benchmarks: every layer against its bare baseline, side by side in one run (make bench)."""
