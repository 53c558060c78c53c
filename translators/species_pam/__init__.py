"""species-pam: occurrences to rare-species models, a presence-absence matrix and its statistics."""

from translators.species_pam.workflow import WORKFLOW

__all__ = ["WORKFLOW"]
