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


#: What a module must not load on import, and why it matters: the CLI answers ``--help`` and starts a
#: command without torch; a spawned ingest worker imports the script it was started from (``clinical``,
#: so the CLI) and then only what scanning and decoding need.
LIGHT_IMPORTS = {
    "clinical.cli": ("torch", "monai", "pandas", "scipy", "sklearn", "mlflow", "prefect", "ray", "flwr"),
    "clinical.ingest.scan": ("torch", "monai", "pandas", "pyarrow", "scipy", "sklearn"),
    "clinical.ingest.worker": ("torch", "monai", "pandas", "pyarrow", "scipy", "sklearn"),
    "clinical.workflows.ingest": ("torch", "monai", "scipy", "sklearn", "mlflow"),
}


@pytest.mark.parametrize("module", sorted(LIGHT_IMPORTS))
def test_light_modules_do_not_import_heavy_libraries(module: str):
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    loaded = set(result.stdout.split())
    assert loaded.isdisjoint(LIGHT_IMPORTS[module]), sorted(loaded & set(LIGHT_IMPORTS[module]))


@pytest.mark.parametrize("package", ["clinical.cohort", "clinical.ingest", "clinical.training", "clinical.workflows"])
def test_every_lazy_export_resolves(package: str):
    # every submodule imported first: one named like an export would shadow it (``from p import name`` → module)
    code = (f"import importlib, pkgutil, types, {package} as p\n"
            "for m in pkgutil.iter_modules(p.__path__): importlib.import_module(f'{p.__name__}.{m.name}')\n"
            "wrong = [n for n in p.__all__ if isinstance(getattr(p, n, None), types.ModuleType | types.NoneType)]\n"
            "assert sorted(dir(p)) == sorted(p.__all__)\n"
            "print(wrong)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr
