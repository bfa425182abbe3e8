"""Data: the BAIR directory layout, the synthetic push world, and data set tools."""
