"""species-pam's worker scripts, shipped into its stages as text."""
