"""Torch datasets over a manifest and split, MONAI transform presets, caching."""
