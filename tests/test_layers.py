"""The layer contract (README, "Layout"), checked by import-linter rather than good intentions."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(cwd / "pyproject.toml"), "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={"PATH": str(LINT_IMPORTS.parent), "PYTHONPATH": str(cwd)},
        check=False,
    )


def test_the_tree_keeps_its_layers():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    """The packages and the contract, copied so a forbidden import can be planted."""
    for package in ("clinical", "pipelines"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize(
    ("module", "statement", "contract"),
    [
        ("clinical/cohort/__init__.py", "import clinical.training", "Layers"),
        ("clinical/models/__init__.py", "import mlflow", "Only clinical.tracking imports mlflow"),
        ("pipelines/__init__.py", "import mlflow", "Only clinical.tracking imports mlflow"),
        ("clinical/training/__init__.py", "import prefect", "clinical never imports prefect or pipelines"),
        ("clinical/tracking/__init__.py", "import pipelines", "clinical never imports prefect or pipelines"),
        ("clinical/cli/train.py", "import clinical.training.engine", "use cases via clinical.workflows"),
        ("pipelines/flows.py", "from clinical.tracking import MlflowCallback", "use cases via clinical.workflows"),
    ],
)
def test_a_planted_forbidden_import_breaks_the_contract(tree_copy: Path, module: str, statement: str, contract: str):
    target = tree_copy / module
    target.write_text(target.read_text() + f"\n{statement}  # planted by the test\n")
    result = _lint_imports(tree_copy)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    broken = [line for line in result.stdout.splitlines() if "BROKEN" in line]
    assert any(contract in line for line in broken), result.stdout


#: What the notebooks, like the CLI and the pipelines, reach only through clinical.workflows.
USE_CASE_LAYERS = ("clinical.training", "clinical.tracking", "clinical.federated")


def test_the_notebooks_reach_use_cases_through_the_application_layer():
    imported = set()
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(notebook.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            code = "\n".join(line for line in "".join(cell["source"]).splitlines() if not line.startswith(("%", "!")))
            for node in ast.walk(ast.parse(code)):
                if isinstance(node, ast.ImportFrom) and node.module:
                    imported.add((notebook.name, node.module))
                elif isinstance(node, ast.Import):
                    imported |= {(notebook.name, alias.name) for alias in node.names}
    assert any(module == "clinical.workflows" for _, module in imported)
    offending = sorted((name, module) for name, module in imported if module.startswith(USE_CASE_LAYERS))
    assert not offending, offending
