"""occurrence-cleaning: split occurrence records by species, clean each species, map the result."""

from translators.occurrence_cleaning.workflow import WORKFLOW

__all__ = ["WORKFLOW"]
