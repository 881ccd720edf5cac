"""MLflow: the training callback, the pyfunc model, the registry and promotion. The only place that imports mlflow."""
