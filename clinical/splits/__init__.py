"""Patient-level and site-held-out splits, and the leakage audit."""
