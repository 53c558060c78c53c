"""Jobs: datasets, job submission and execution, outputs."""
