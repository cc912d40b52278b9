"""Data sets. `load(name, split)` is the door in."""
