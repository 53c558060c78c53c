"""mcpa: metacommunity phylogenetics analysis (MCPA) of a PAM, tested against randomized PAMs."""

from translators.mcpa.workflow import WORKFLOW

__all__ = ["WORKFLOW"]
