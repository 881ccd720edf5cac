"""Metrics with bootstrap CIs at patient level, calibration, per-site tables, plots, Grad-CAM."""
