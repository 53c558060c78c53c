"""OGC API - Processes - Part 1 (1.0): a face of the same catalog and jobs as /api/v1/."""
