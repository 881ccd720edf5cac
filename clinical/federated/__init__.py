"""Flower client and server apps for federated training."""
