"""selftest: N independent sleeps and a gather, for health checks and benchmarks (no lmpy)."""

from translators.selftest.workflow import WORKFLOW

__all__ = ["WORKFLOW"]
