"""pam-stats: PAM statistics (optionally phylogenetic) tested against randomized PAMs."""

from translators.pam_stats.workflow import WORKFLOW

__all__ = ["WORKFLOW"]
