"""The report's "Samples" section (runs with a sample key): the design, the sample-level test,
whether the pair screen could be calibrated, how DeepMapper's top features compare with the
pseudobulk DESeq2 baseline, and the donor x feature panel (each top feature's mean in each sample).
"""
from __future__ import annotations

import html

import numpy as np

N_COMPARE = 20


def section(res) -> str:
    """HTML of the section; a note when the run had no sample key."""
    from deepmapper.results.report.html import _fig_html, _note, _table

    sl = res.summary.get("sample_level")
    if not sl:
        return _note("No sample key: cells were split, ranked and permuted as independent units. For a condition "
                     "measured on several donors, rerun with --sample-key (see README, conditions across donors).")
    parts = [f"<p>Samples from <code>{html.escape(str(sl['sample_key']))}</code>: {sl['n_samples']} "
             + ", ".join(f"{n} {html.escape(str(k))}" for k, n in sl["samples_per_label"].items())
             + (". Held-out and validation sets are whole samples; " if "paired" not in str(sl.get("design", ""))
                else f". A paired design ({html.escape(str(sl['design']))}): labels are compared within donors, and "
                     "held-out and validation sets are whole donors; ") + _rank_text(sl)
             + "; <code>sample_q</code> comes from "
             + html.escape(str(sl["test"])) + f" ({sl['n_sample_q_below']} features with q &lt; "
             + f"{sl['q_threshold']:g}).</p>"]
    if sl.get("note"):
        parts.append(_note(str(sl["note"])))
    parts.append(_note(f"Pair screen: {sl.get('pair_screen', 'n/a')}."))
    parts.append(_compare(res, _table))
    fig = _panel(sl["panel"])
    if fig is not None:
        parts.append("<p>Each top feature's mean (analysed values) in each sample, standardised across samples "
                     "(z); samples grouped by label. A finding the condition explains is high (or low) in every "
                     "sample of a label, not in one.</p>")
        parts.append(_fig_html(fig, "plot-samples"))
    return "".join(parts)


def _rank_text(sl: dict) -> str:
    from deepmapper.results.findings import RANK_TEST_ALONE

    p = "the sample-level p value (<code>sample_p</code>, the largest with any one sample left out)"
    if sl.get("rank") == RANK_TEST_ALONE:
        why = sl.get("model_left_out") or "no pass passed the accuracy gate on held-out samples"   # older results
        return ("<strong>the rank is -log10 of " + p + " alone</strong>: " + html.escape(why)
                + "; the model's importances only order its ties")
    return "the rank is median importance x -log10 of " + p


def _compare(res, table_fn) -> str:
    pb = res.baselines.get("pseudobulk")
    if pb is None:
        why = (res.baselines_meta.get("pseudobulk") or {}).get("unavailable")
        return "<p>" + html.escape(f"No pseudobulk baseline{': ' + why if why else ''}.") + "</p>"
    ours = list(res.findings["feature"].head(N_COMPARE))
    theirs = list(pb["feature"].head(N_COMPARE))
    shared = len(set(ours) & set(theirs))
    q = res.findings["sample_q"].head(N_COMPARE) if "sample_q" in res.findings.columns else None
    n_q = int((q < 0.05).sum()) if q is not None else 0
    rows = [[str(i + 1), html.escape(a), html.escape(b)] for i, (a, b) in enumerate(zip(ours, theirs))]
    return (f"<p>DeepMapper's top {N_COMPARE} and pseudobulk DESeq2's top {N_COMPARE} share {shared} features; "
            f"{n_q} of DeepMapper's top {N_COMPARE} have <code>sample_q</code> &lt; 0.05.</p>"
            + table_fn(["Rank", "DeepMapper (with samples)", "Pseudobulk DESeq2"], rows, cls="plain side-by-side"))


def _panel(panel: dict):
    import plotly.graph_objects as go

    if not panel or not panel.get("features"):
        return None
    means = np.asarray(panel["means"], np.float64)                      # (features, samples)
    order = sorted(range(len(panel["samples"])), key=lambda i: (panel["labels"][i], panel["samples"][i]))
    means = means[:, order]
    sd = means.std(axis=1, keepdims=True)
    z = (means - means.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0)
    x = [f"{panel['samples'][i]} ({panel['labels'][i]}, {panel['n_cells'][i]} cells)" for i in order]
    fig = go.Figure(go.Heatmap(z=z, x=x, y=panel["features"], colorscale="RdBu_r", zmid=0,
                               customdata=means, hovertemplate="%{y} in %{x}: mean %{customdata:.3g}<extra></extra>",
                               colorbar=dict(title="z")))
    fig.update_layout(title="Top features in each sample", height=max(320, 22 * len(panel["features"]) + 160),
                      yaxis=dict(autorange="reversed"), xaxis=dict(tickangle=-45))
    return fig
