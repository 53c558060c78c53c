"""CCTools: the only code that starts catalog servers, makeflows, workers, factories; no Django."""
