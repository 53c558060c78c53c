"""pam-stats's worker scripts, shipped into its stages as text."""
