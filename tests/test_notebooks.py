"""The researcher notebooks run top to bottom on the tiny synthetic cohort, and are committed without outputs.

The three notebooks share one work folder and one MLflow store, in the order a
researcher opens them: notebook 1 makes the cohort and split, notebook 2
trains, compares and registers a champion, notebook 3 reads the runs and the
champion back. Notebook 3 also runs alone on an empty store, where it makes
the cohort and trains and registers a quick champion itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import install as install_kernelspec
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXPECTED = ["01_explore_cohort.ipynb", "02_train_and_compare.ipynb", "03_mlflow_results.ipynb"]
KERNEL = "clinical-test"
CELL_TIMEOUT_S = 600

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kernel(module_tmp):
    """A kernelspec whose kernel is this interpreter (the project's venv), and the tiny notebook parameters."""
    root = module_tmp("jupyter")
    install_kernelspec(kernel_name=KERNEL, prefix=str(root))
    patch = pytest.MonkeyPatch()
    patch.setenv("JUPYTER_PATH", str(root / "share" / "jupyter"))
    patch.setenv("CLINICAL_NB_SIZE", "tiny")
    patch.setenv("CLINICAL_PSEUDONYM_KEY", "notebook-test-key")  # the user's key file is left alone
    yield KERNEL
    patch.undo()


@pytest.fixture(scope="module")
def workdir(kernel: str, module_tmp) -> Path:
    """The folder the three notebooks share, in order."""
    return module_tmp("notebooks")


def execute(name: str, root: Path) -> nbformat.NotebookNode:
    """Run one notebook in a fresh kernel in ``root`` (its work folder and MLflow store under ``root/work``).

    A failing cell fails the test with its traceback.
    """
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    client = NotebookClient(notebook, kernel_name=KERNEL, timeout=CELL_TIMEOUT_S,
                            resources={"metadata": {"path": str(root)}})
    with pytest.MonkeyPatch.context() as patch:  # the kernel inherits this environment when it starts
        patch.setenv("CLINICAL_NB_WORKDIR", str(root / "work"))
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'work' / 'mlflow.db'}")
        try:
            client.execute()
        except CellExecutionError as error:
            pytest.fail(f"{name} failed:\n{error}")
    return notebook


def images(notebook: nbformat.NotebookNode) -> int:
    return sum("image/png" in output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", []))


def errors(notebook: nbformat.NotebookNode) -> list[str]:
    return [output.get("ename", "") for cell in notebook.cells for output in cell.get("outputs", [])
            if output.get("output_type") == "error"]


def test_the_three_notebooks_are_in_the_repository():
    assert [path.name for path in NOTEBOOKS][:3] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_have_no_outputs(path: Path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code), "strip the outputs"
    assert "widgets" not in notebook.metadata


def test_the_kernel_is_this_interpreter(kernel: str):
    spec = KernelSpecManager().get_kernel_spec(kernel)
    assert Path(spec.argv[0]).resolve() == Path(sys.executable).resolve()


def test_01_explores_the_cohort_and_audits_the_split(workdir: Path):
    notebook = execute("01_explore_cohort.ipynb", workdir)
    assert not errors(notebook)
    assert images(notebook) >= 2  # the grid of examples and the brightness per site
    text = "".join(str(output) for cell in notebook.cells for output in cell.get("outputs", []))
    assert "PASSED" in text and "FAIL" in text  # the real split passes; the image-level one does not
    assert (workdir / "work" / "split.parquet").is_file()


def test_02_trains_both_recipes_and_registers_a_champion(workdir: Path):
    notebook = execute("02_train_and_compare.ipynb", workdir)
    assert not errors(notebook)
    assert images(notebook) >= 2  # learning curves and the ROC overlay
    text = "".join(str(output) for cell in notebook.cells for output in cell.get("outputs", []))
    assert "registered clinical-radiographs-notebook version 1 as @champion" in text


def test_03_reads_the_runs_and_predicts_from_dicom_with_the_champion(workdir: Path):
    notebook = execute("03_mlflow_results.ipynb", workdir)
    assert not errors(notebook)
    assert images(notebook) >= 7  # history, ROC, PR, calibration, confusion, forest, Grad-CAM, DICOMs
    text = "".join(str(output) for cell in notebook.cells for output in cell.get("outputs", []))
    assert "models:/clinical-radiographs-notebook@champion is version 1" in text
    assert "pooled out-of-fold test predictions" in text  # read from notebook 2's parent run
    assert "true label" in text


def test_03_runs_on_its_own_and_trains_a_champion_when_the_store_has_none(kernel: str, tmp_path: Path):
    notebook = execute("03_mlflow_results.ipynb", tmp_path)
    assert not errors(notebook)
    assert images(notebook) >= 7
    text = "".join(str(output) for cell in notebook.cells for output in cell.get("outputs", []))
    assert "models:/clinical-radiographs-notebook@champion is version 1" in text
    # The quick champion comes from the cross-validation use case (one fold): its parent run holds the pooled table.
    assert "pooled out-of-fold test predictions: " in text
