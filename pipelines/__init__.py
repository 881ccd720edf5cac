"""Prefect flows and deployments: the only place that imports prefect. Flows hold no logic of their own."""
