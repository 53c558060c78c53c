"""mcpa's worker scripts, shipped into its stages as text."""
