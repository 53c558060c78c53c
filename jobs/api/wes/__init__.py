"""GA4GH Workflow Execution Service 1.1.0: a face of the same jobs as /api/v1/."""
