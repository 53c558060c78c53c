"""What several workflows share: grid, argument text, chunking, p-values, species keys, scripts."""
