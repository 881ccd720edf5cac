"""clinical: from DICOM, NIfTI, whole slides and photographs to trustworthy, deployed classifiers.

The package is layered (lowest first): ``cohort`` → ``ingest``, ``splits`` →
``data`` → ``models`` → ``evaluation`` → ``training`` → ``tracking`` →
``federated`` → ``cli``. A module imports only from layers below it; the
contract is checked by import-linter in the tests.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
