"""The pyfunc model's code, as MLflow's "models from code" expects: a file that names the model.

``save_classifier`` passes this file's path to MLflow rather than a pickled
object, so a served model is rebuilt from readable code, never unpickled.
"""

from __future__ import annotations

import mlflow

from clinical.tracking.pyfunc import ClassifierPyfunc

mlflow.models.set_model(ClassifierPyfunc())
