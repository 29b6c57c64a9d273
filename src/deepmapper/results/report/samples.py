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
    paired = "paired" in str(sl.get("design", ""))
    per_label = ", ".join(f"{n} {html.escape(str(k))}" for k, n in sl["samples_per_label"].items())
    parts = [f"<p>{sl['n_samples']} samples (<code>{html.escape(str(sl['sample_key']))}</code>): {per_label}"
             + (f"; design: {html.escape(str(sl.get('design') or 'one label per sample'))}. Held-out and validation "
                "sets are whole samples; " if not paired
                else f". A paired design ({html.escape(str(sl['design']))}): labels are compared within donors, and "
                     "held-out and validation sets are whole donors; ") + _rank_text(sl)
             + "; the sample-level test: "
             + html.escape(str(sl["test"])) + f" ({sl['n_sample_q_below']} features with <code>sample_q</code> &lt; "
             + f"{sl['q_threshold']:g}).</p>"]
    if sl.get("note"):
        parts.append(_note(str(sl["note"])))
    parts.append(_note(f"Pair screen: {sl.get('pair_screen', 'n/a')}{_screen_samples(res, sl)}."))
    parts.append(_compare(res, _table))
    fig = _panel(sl["panel"])
    if fig is not None:
        parts.append("<p>Each top feature's mean (analysed values) in each sample, standardised across samples "
                     "(z); samples grouped by label. A finding the condition explains is high (or low) in every "
                     "sample of a label, not in one.</p>")
        parts.append(_fig_html(fig, "plot-samples"))
    return "".join(parts)


def _screen_samples(res, sl: dict) -> str:
    """Where the pair screen's sample counts ('3 + 3 samples') are fewer than the run's: the screen runs
    on the training samples, outside the held-out set."""
    import re

    m = re.search(r"(\d+(?:\s*\+\s*\d+)+) samples", str(sl.get("pair_screen") or ""))
    if not m:
        return ""
    seen = sum(int(x) for x in re.findall(r"\d+", m.group(1)))
    n = sl.get("n_samples")
    if not isinstance(n, int) or seen >= n:
        return ""
    hs = getattr(res, "heldout_samples", None)
    held = f" ({hs['n']} held out)" if hs else ""
    return (f" (the screen runs on the samples outside the held-out set: {seen} of the {n}{held}, so its "
            "calibration counts those)")


def _rank_text(sl: dict) -> str:
    from deepmapper.results.findings import RANK_TEST_ALONE

    p = ("the sample-level p value (<code>sample_p</code>; a feature whose effect collapses without one sample "
         "is judged without it)")
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
    meta = res.baselines_meta.get("pseudobulk") or {}
    q_max = (res.summary.get("sample_level") or {}).get("q_threshold")
    q_max = float(q_max) if isinstance(q_max, (int, float)) else 0.05
    n_q = int((q < q_max).sum()) if q is not None else 0
    rows = [[str(i + 1), html.escape(a), html.escape(b)] for i, (a, b) in enumerate(zip(ours, theirs))]
    return (f"<p>DeepMapper's top {N_COMPARE} and pseudobulk DESeq2's top {N_COMPARE} share {shared} features; "
            f"{n_q} of DeepMapper's top {N_COMPARE} have <code>sample_q</code> &lt; {q_max:g}. The \"Pseudobulk "
            f"DESeq2\" column is plain {html.escape(str(meta.get('test') or 'PyDESeq2'))} on all "
            + (f"{int(meta['n_samples'])} " if isinstance(meta.get("n_samples"), int) else "")
            + "samples at once (<code>baselines/pseudobulk.tsv</code>), not the leave-one-sample-out test behind "
              "<code>sample_q</code>.</p>"
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
