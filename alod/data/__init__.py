"""Datasets: readers into one compact index, the built-in scene generator, torch datasets, splits."""
