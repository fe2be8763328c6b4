"""The composition root: the only package that imports every other one (entry points, wiring)."""
