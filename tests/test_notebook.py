"""notebooks/analysis.ipynb runs top to bottom on a results folder and answers from its tables and claims.json."""

import json

import nbclient
import nbformat

from bench import results
from conftest import ROOT
from plots import report
from test_plots import REFERENCE, RUNS, _history


def test_analysis_notebook_executes_on_a_results_folder(tmp_path, monkeypatch):
    folder = tmp_path / "toy"
    history = _history(RUNS).assign(alpha=1.0, backtrack=0.0, beta=0.5, bfgs_skipped=0.0)
    for _, r in RUNS.iterrows():
        results.append_run(folder, {**r.to_dict(), "images_per_s": 100.0},
                           history[history.run_id == r.run_id].to_dict("records"))
    paths = report.write(folder, tmp_path / "figs", REFERENCE)
    assert [p.name for p in paths[-3:]] == ["claims.json", "claims.md", "index.html"]
    gains = [c["gain_points"] for c in json.loads(paths[-3].read_text())["claims"]]
    monkeypatch.setenv("RESULTS_DIR", str(folder))
    monkeypatch.setenv("FIGURES_DIR", str(tmp_path / "figs"))
    nb = nbformat.read(ROOT / "notebooks" / "analysis.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "8 rows, 7 finished runs in 6 configurations" in text
    assert gains == [-2.0, 30.0] and "30.0" in text and "-2.0" in text  # read back from claims.json
    assert "inconclusive" in text and "Welch t interval" in text
    assert "19.0" in text  # the paper's gain at 16384
    assert "is missing" not in text  # the notebook read the file the report wrote
