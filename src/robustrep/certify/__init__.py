"""Certified defenses: interval bounds, Wong & Kolter's dual network, sparsification."""
