"""docs/tutorial.ipynb runs from top to bottom (nbclient, a real Jupyter kernel) and shows what it says.

The notebook is executed as a user would run it, then one extra cell reads the
kernel's state (the AnnData and the overlap table the tutorial built), so the
assertions are on the tutorial's own results, not only on "it ran".
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"

CHECK = """
import json
u = adata.uns["deepmapper"]
print("CHECK " + json.dumps({
    "accuracy": float(u["evaluation"]["accuracy"]),
    "majority_rate": float(u["evaluation"]["majority_rate"]),
    "n_passes": int(u["evaluation"]["n_passes"]),
    "n_ranked": int(len(u["ranking"])),
    "groups": list(u["names"].dtype.names),
    "overlap": {str(g): int(v) for g, v in overlap["shared"].items()},
    "wilcoxon_groups": list(adata.uns["wilcoxon"]["names"].dtype.names),
    "rnk_rows": len(open("CD14_monocyte.rnk").read().splitlines()),
    "trust": sorted(u["trust"]),
    "deepmapper_file": dm.__file__,
}))
"""


def _kernel_manager():
    """A kernel running this very interpreter (the one with the package under test)."""
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

    class ThisPython(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                              display_name="Python 3", language="python", name="python3")

    return KernelManager(kernel_name="python3", kernel_spec_manager=ThisPython())


@pytest.mark.slow
def test_tutorial_runs_and_shows_its_results(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(TUTORIAL, as_version=4)
    nbformat.validate(nb)
    n_cells = len(nb.cells)
    nb.cells.append(nbformat.v4.new_code_cell(CHECK))
    NotebookClient(nb, km=_kernel_manager(), timeout=900, allow_errors=False,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()

    code = [c for c in nb.cells[:n_cells] if c.cell_type == "code"]
    for cell in code:
        assert not [o for o in cell.outputs if o.output_type == "error"], cell.source
    # every plot cell drew a figure
    for call in ("dm.pl.rank_features", "dm.pl.stability", "dm.pl.attribution_map",
                 "sc.pl.rank_genes_groups_dotplot", "sc.pl.rank_genes_groups_matrixplot"):
        cell = next(c for c in code if c.source.startswith(call))
        assert any("image/png" in o.get("data", {}) for o in cell.outputs), call
    # the scanpy getter showed DeepMapper's per-group table
    getter = next(c for c in code if "rank_genes_groups_df" in c.source)
    html = "".join(o["data"].get("text/html", "") for o in getter.outputs if "data" in o)
    assert "names" in html and "logfoldchanges" in html

    line = next(line for o in nb.cells[-1].outputs if o.output_type == "stream"
                for line in o.text.splitlines() if line.startswith("CHECK "))
    got = json.loads(line[len("CHECK "):])
    assert Path(got["deepmapper_file"]).resolve().is_relative_to(Path(__file__).resolve().parents[1])
    assert got["n_passes"] == 4 and got["n_ranked"] == 765
    assert got["rnk_rows"] == 765                                  # a pre-ranked list of every gene (issue 21)
    assert {"trustworthy", "reasons", "baseline_accuracy", "margin"} <= set(got["trust"])
    assert got["accuracy"] > got["majority_rate"] + 0.2            # the model learnt the cell types
    assert sorted(got["groups"]) == sorted(got["wilcoxon_groups"]) and len(got["groups"]) == 10
    overlap = got["overlap"]
    assert set(overlap) == set(got["groups"]) and all(0 <= v <= 10 for v in overlap.values())
    # both rank markers of the same cells: the top 10 lists share genes in most groups
    # (measured: 10 of 10 groups share genes, 4.0 of the top 10 on average)
    assert sum(v > 0 for v in overlap.values()) >= 7, overlap
    assert sum(overlap.values()) / len(overlap) >= 2, overlap
