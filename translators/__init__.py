"""Workflow catalog: pure translators from a job request and staged inputs to makeflow stages."""

from translators import mcpa, occurrence_cleaning, pam_stats, selftest, species_pam
from translators.base import InputSpec, InvalidRequest, Stage, UnknownWorkflow, Workflow

__all__ = ["InputSpec", "InvalidRequest", "Stage", "UnknownWorkflow", "Workflow", "get", "names"]

_CATALOG: dict[str, Workflow] = {
    w.name: w
    for w in (
        selftest.WORKFLOW,
        pam_stats.WORKFLOW,
        occurrence_cleaning.WORKFLOW,
        species_pam.WORKFLOW,
        mcpa.WORKFLOW,
    )
}


def names() -> list[str]:
    """Catalog names, sorted."""
    return sorted(_CATALOG)


def get(name: str) -> Workflow:
    """The workflow called `name`; UnknownWorkflow (a KeyError) if there is none."""
    try:
        return _CATALOG[name]
    except (KeyError, TypeError):
        raise UnknownWorkflow(name) from None
