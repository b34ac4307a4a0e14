"""examples/nlaweb_tour.ipynb, executed cell by cell (nbclient, a real IPython kernel) against the live
stack, so the notebook cannot rot; the committed file keeps no outputs."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from nlaweb.api.models import ApiKey
from nlaweb.api.ratelimit import forget_windows
from tests.live import REPO
from tests.personas import make_persona

pytestmark = pytest.mark.django_db(transaction=True)
NOTEBOOK = REPO / "examples" / "nlaweb_tour.ipynb"


def _text(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")


def test_the_committed_notebook_has_no_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_the_tour_notebook_runs_against_the_live_server(stack, tmp_path, monkeypatch):
    forget_windows()
    key = ApiKey.objects.issue(make_persona("nb").user, "notebook")[1]
    for name, value in {
        "NLAWEB_URL": stack.base_url,
        "NLAWEB_API_KEY": key,
        "NLAWEB_TOUR_OUT": str(tmp_path),
        "MPLBACKEND": "Agg",
    }.items():
        monkeypatch.setenv(name, value)  # the kernel inherits the test's environment
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    printed = "\n".join(_text(c) for c in notebook.cells if c.cell_type == "code")
    assert "relative MSE" in printed and "latent 2" in printed, printed + stack.logs()
    assert "nla_verbalizer_last" in printed
    assert (tmp_path / "heatmap.png").stat().st_size > 1000
