"""Running one job: its folder, its run loop, its hand-back on shutdown and its package."""
