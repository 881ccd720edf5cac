"""Model factory and registry, layer groups, pretrained-weight loading, self-supervised pretraining."""
