"""The standalone ``report.html``: one file, plotly.js and data inline, opens offline.

Figures are plotly (its JS is embedded once in the page head); the ranked
feature table is plain HTML built by a small inline script (``report.js``) from
embedded JSON, so it can sort, search and download TSV without a server.
Sections whose inputs are absent say so instead of disappearing silently.
"""
from __future__ import annotations

import html
import json
import math
from importlib import resources
from string import Template

import numpy as np

from deepmapper._utils.versions import __version__
from deepmapper.results.report import mqc
from deepmapper.results.report.results import Results, finite_or_none, heldout_text, with_samples

N_LABELLED = 12          # genes named on the stability plot and the attribution map
N_SIDE_BY_SIDE = 20      # rows of the baseline comparison table
N_PER_CLASS = 5          # top features per class in the heatmap
PLOT_CONFIG = {"displaylogo": False, "responsive": True,
               "toImageButtonOptions": {"format": "svg", "scale": 1}}
ACCEPTED, REJECTED, ACCENT, MUTED = "#2a9d8f", "#e76f51", "#264653", "#8d99ae"


# -- page ------------------------------------------------------------------------

def build_html(res: Results) -> str:
    """The whole page as one string."""
    from plotly.offline import get_plotlyjs

    # What a scanpy user asks first: what marks each group (with direction); the ranking across all
    # groups after it (its top is often a feature that separates many groups a little).
    sections = [
        ("summary", "Summary", _summary(res)),
        ("per-class", "What marks each group", _per_class(res)),
        ("features", "Ranking across all groups", _feature_table(res)),
        ("stability", "Stability", _stability(res)),
        ("confusion", "Confusion matrix", _confusion(res)),
        ("passes", "Passes", _passes(res)),
        ("loss", "Loss curves", _loss(res)),
        ("attribution-map", "Attribution map", _attribution_map(res)),
        ("pairs", "Gene pairs", _pairs(res)),
        ("baselines", "Baselines", _baselines(res)),
        ("run", "Parameters and versions", _run(res)),
    ]
    if res.dataset.get("rss"):  # gene-set features only: beside what marks each group
        sections.insert(2, ("rss", "Gene-set specificity (RSS)", _rss(res)))
    if res.summary.get("sample_level"):   # runs with a sample key: after the ranking it qualifies
        from .samples import section as samples_section

        at = [sid for sid, _, _ in sections].index("features") + 1
        sections.insert(at, ("samples", "Samples", samples_section(res)))
    nav = "".join(f'<a href="#{sid}">{html.escape(title)}</a>' for sid, title, _ in sections)
    body = _trust_banner(res) + "".join(f'<section id="{sid}"><h2>{html.escape(title)}</h2>{content}</section>'
                                        for sid, title, content in sections)
    name = res.sample_name
    template = Template(_asset("template.html"))
    return template.substitute(
        title=html.escape(f"DeepMapper report: {name}"),
        heading=html.escape(name),
        subtitle=html.escape(_subtitle(res)),
        plotlyjs=get_plotlyjs(),
        nav=nav,
        body=body,
        script=_asset("report.js"),
        version=html.escape(__version__),
    )


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _subtitle(res: Results) -> str:
    """'700 cells x 765 features, 10 classes (labels: bulk_labels)'."""
    size = f"{res.n_features:,} features"
    if res.n_cells is not None:
        size = f"{res.n_cells:,} cells x {size}"
    parts = [size]
    if res.classes:
        parts.append(f"{len(res.classes)} classes")
    label = res.dataset.get("label_key")
    return ", ".join(parts) + (f" (labels: {label})" if label else "")


def _fig_html(fig, div_id: str) -> str:
    fig.update_layout(template="simple_white", margin=dict(l=60, r=30, t=50, b=50),
                      font=dict(family="system-ui, -apple-system, Segoe UI, sans-serif", size=12))
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG,
                       default_width="100%")


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _json_script(obj) -> str:
    """JSON safe to place inside <script>: no '</' can close the tag early."""
    return json.dumps(obj, allow_nan=False, separators=(",", ":")).replace("</", "<\\/")


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * float(x):.1f}%"


def _table(headers: list[str], rows: list[list], cls: str = "plain") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


# -- sections --------------------------------------------------------------------

def _trust_banner(res: Results) -> str:
    """Above everything when findings.json's ``trust`` says the model is not to be trusted (absent: none)."""
    trust = res.summary.get("trust")
    if not isinstance(trust, dict) or trust.get("trustworthy", True) is not False:
        return ""
    reasons = [str(r) for r in trust.get("reasons") or []]
    items = "".join(f"<li>{html.escape(r)}</li>" for r in reasons)
    base = trust.get("baseline_accuracy")
    extra = (f" Logistic regression on the same held-out cells: {_pct(base)}." if isinstance(base, (int, float))
             else "")
    return ('<div class="trust-banner" id="trust-banner" role="alert"><strong>Do not trust this ranking yet: '
            "the model did not learn the groups well enough.</strong>" + html.escape(extra)
            + (f"<ul>{items}</ul>" if items else "")
            + "<p>Its features may reflect noise. Try more epochs, another backbone, or compare with "
              "<code>baselines/logistic.tsv</code> before using them.</p></div>")


def _summary(res: Results) -> str:
    ev = res.evaluation or {}
    n_acc, n_run = sum(res.accepted), len(res.accuracies)
    top = list(res.findings["feature"].head(5))
    if ev:
        accuracy = _pct(ev.get("accuracy"))
        if res.summary.get("sample_level"):
            accuracy += f"<small>{html.escape(heldout_text(res))}</small>"
        elif ev.get("majority_rate") is not None:
            accuracy += f"<small>majority class {_pct(ev['majority_rate'])}</small>"
    else:
        accuracy = "n/a<small>no evaluation.json</small>"
    cards = [
        ("Top features, all groups", ", ".join(html.escape(f) for f in top)),
        ("Ensembled accuracy", accuracy),
        ("Passes accepted", f"{n_acc} / {n_run}<small>mean accuracy {_pct(res.mean_accepted_accuracy())}</small>"),
    ]
    lr_acc = (res.baselines_meta.get("logistic") or {}).get("accuracy")
    if lr_acc is not None:
        cards.append(("Logistic regression", f"{_pct(lr_acc)}<small>same held-out cells"
                      + ("; the passes start from its fit" if _wide_start_logistic(res) else "") + "</small>"))
    stable = [r for r in res.summary.get("stability") or [] if r.get("threshold") == 0.9]
    if stable:
        cards.append(("Stable features", f"{stable[0]['n_selected']}<small>selected in &ge; 90% of passes"
                                          "</small>"))
    out = '<div class="cards">' + "".join(
        f'<div class="card"><div class="label">{html.escape(t)}</div><div class="value">{v}</div></div>'
        for t, v in cards) + "</div>"
    out += _trust_line(res)
    out += "".join(_note(n) for n in res.notes)
    return out


def _wide_start_logistic(res: Results) -> bool:
    """The cnn's wide (linear) path starts at the logistic-regression fit (config backbone.wide_start)."""
    bb = (res.summary.get("config") or {}).get("backbone") or {}
    return bb.get("wide_start") == "logistic" and bb.get("kind", "cnn") == "cnn"


WIDE_START_TEXT = ("each pass's linear (wide) path starts at a penalised logistic-regression fit of its training "
                   "cells (<code>wide_start: logistic</code>), so matching logistic regression is where the model "
                   "begins, not something it found on its own")


def _trust_line(res: Results) -> str:
    """One line with findings.json's trust verdict when it says the run is trustworthy (the banner
    above the page says the opposite)."""
    trust = res.summary.get("trust")
    if not isinstance(trust, dict) or trust.get("trustworthy") is not True:
        return ""
    acc = (res.evaluation or {}).get("accuracy")
    base, margin = trust.get("baseline_accuracy"), trust.get("margin")
    parts = ["<b>Trust: ok</b>"]
    if isinstance(acc, (int, float)):
        where = (f" on the same {trust['n_heldout']:,} held-out cells" if isinstance(trust.get("n_heldout"), int)
                 else " on the same held-out cells")
        parts.append(f"ensembled held-out accuracy {_pct(acc)}"
                     + (f" against logistic regression {_pct(base)}{where}" if isinstance(base, (int, float))
                        else " (no logistic-regression baseline to compare with)"))
    if isinstance(margin, (int, float)):
        parts.append(f"allowed shortfall {_pct(margin)}")
    text = "; ".join(parts) + "."
    if _wide_start_logistic(res) and isinstance(base, (int, float)):
        text += " Note: " + WIDE_START_TEXT + "."
    return f'<p class="trust-ok" id="trust-line">{text}</p>'


def _top_bar(res: Results) -> str:
    import plotly.graph_objects as go

    top = res.findings.head(25).iloc[::-1]
    fig = go.Figure(go.Bar(
        x=top["median_importance"], y=top["feature"], orientation="h",
        marker=dict(color=top["selection_frequency"], colorscale="Viridis", cmin=0, cmax=1,
                    colorbar=dict(title="Selection<br>frequency")),
        customdata=np.stack([top["rank"], top["selection_frequency"]], axis=1),
        hovertemplate="%{y}<br>rank %{customdata[0]}<br>median importance %{x:.4g}"
                      "<br>selection frequency %{customdata[1]:.2f}<extra></extra>"))
    fig.update_layout(title=f"The {len(top)} best-ranked features", height=620,
                      xaxis_title="Median importance (share of a pass's total attribution)")
    return _fig_html(fig, "plot-top-features")


def _feature_table(res: Results) -> str:
    df = res.findings
    baseline_rank = {m: dict(zip(b["feature"], b["rank"])) for m, b in res.baselines.items()}
    columns = [("rank", "Rank", "num"), ("feature", "Feature", "text"),
               ("selection_frequency", "Selection frequency", "num"),
               ("median_importance", "Median importance", "num"), ("mean_rank", "Mean rank", "num"),
               ("pfer_bound", "PFER bound", "num")]
    columns += [(f"rank_{m}", f"{m.capitalize()} rank", "num") for m in baseline_rank]
    sample_cols = [c for c in SAMPLE_COLUMNS if c[0] in df.columns]
    columns += sample_cols
    columns.append(("is_denovo", "De novo", "flag"))
    has_kind = "kind" in df.columns
    if has_kind:
        columns += [("kind", "Kind", "text"), ("partners", "Partner", "text")]
    rows = []
    for r in df.itertuples(index=False):
        row = [int(r.rank), str(r.feature), float(r.selection_frequency), float(r.median_importance),
               float(r.mean_rank), finite_or_none(r.pfer_bound)]
        row += [_int_or_none(baseline_rank[m].get(r.feature)) for m in baseline_rank]
        row += [(_int_or_none(getattr(r, k)) if k == "model_rank" else finite_or_none(getattr(r, k)))
                for k, _, _ in sample_cols]
        row.append(bool(r.is_denovo))
        if has_kind:
            partner = r.partners if isinstance(r.partners, str) else ""
            row += [str(r.kind), partner]
        rows.append(row)
    spec = {"columns": [{"key": k, "title": t, "type": ty} for k, t, ty in columns], "rows": rows,
            "filename": f"{res.sample_name}_report_table.tsv"}
    n_denovo = int(df["is_denovo"].sum())
    intro = (f"<p>All {len(df):,} features, {_rank_basis(res)} (no direction: a feature may be up in one group "
             "and down in another). Click a column to sort, type to search, and download the rows shown as TSV "
             "(the columns of this table, not findings.tsv's). <b>Selection frequency</b>: share of accepted passes whose "
             f"top {res.top_k or 'k'} held the feature. <b>PFER bound</b>: Meinshausen-B&uuml;hlmann bound on "
             "the expected number of false selections when cutting at this frequency (empty below 0.5). "
             + (f"{n_denovo} de-novo features (<span class='denovo'>DENOVO</span>) are flagged." if n_denovo
                else "No de-novo features in this run.")
             + (" <b>sample_p</b> (what the rank weighs), <b>sample_q</b>: the sample-level test (see Samples); "
                "<b>Sample reproducibility</b>: |2 AUC - 1| of the per-sample means (1: every sample of one label beyond "
                "every sample of the others; shown, not used in the rank)." if sample_cols else "") + "</p>")
    controls = ('<div class="controls"><input id="feature-search" type="search" placeholder="Search features'
                ' (e.g. CD79A)" aria-label="Search features"> <span id="feature-count"></span> '
                '<button id="feature-download" type="button">Download TSV</button></div>')
    return (intro + controls + '<div class="scroll"><table id="feature-table" class="data"></table></div>'
            f'<script type="application/json" id="feature-data">{_json_script(spec)}</script>' + _top_bar(res))


SAMPLE_COLUMNS = [("sample_p", "sample_p", "num"), ("sample_q", "sample_q", "num"),
                  ("sample_reproducibility", "Sample reproducibility", "num"), ("model_rank", "Model rank", "num")]


def _rank_basis(res: Results) -> str:
    """What the rank of findings.tsv is made of (findings.json ``sample_level.rank`` with a sample key)."""
    sl = res.summary.get("sample_level")
    if not sl:
        return "ranked by how much the model relies on them to tell all the groups apart"
    from deepmapper.results.findings import RANK_TEST_ALONE

    rank = str(sl.get("rank") or "")
    if rank == RANK_TEST_ALONE or "alone" in rank:
        why = sl.get("model_left_out") or "no pass passed the accuracy gate on held-out samples"
        return ("ranked by the sample-level test alone, <b>not by the model</b>: <code>"
                + html.escape(rank or "-log10(sample_p) alone") + "</code>; the model was left out because "
                + html.escape(str(why)) + ". <b>Model rank</b> is the model's own order, shown for comparison")
    return ("ranked by the model's median importance x the sample-level evidence (<code>"
            + html.escape(rank or "median importance x -log10(sample_p)")
            + "</code>): a feature needs both the model's reliance and a difference between samples. "
              "<b>Model rank</b> is the model's order alone")


def _int_or_none(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)


def _stability(res: Results) -> str:
    import plotly.graph_objects as go

    df = res.findings
    lab = df.head(N_LABELLED // 2).sort_values("median_importance", kind="stable")
    fig = go.Figure()
    fig.add_trace(go.Scattergl(
        x=df["median_importance"], y=df["selection_frequency"], mode="markers", name="features",
        text=df["feature"], customdata=df["rank"],
        marker=dict(size=6, color=np.where(df["is_denovo"], REJECTED, ACCENT), opacity=0.6),
        hovertemplate="%{text}<br>rank %{customdata}<br>median importance %{x:.4g}"
                      "<br>selection frequency %{y:.2f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=lab["median_importance"], y=lab["selection_frequency"], mode="markers",
                             marker=dict(size=11, color="rgba(0,0,0,0)", line=dict(color=ACCENT, width=1.5)),
                             showlegend=False, hoverinfo="skip"))      # rings the named features
    # Names on arrows, staggered in four heights from left to right: the best features share a
    # frequency (1.0 whenever every pass selected them) and sit close in importance, so names set on
    # the points themselves print over each other.
    for i, r in enumerate(lab.itertuples(index=False)):
        fig.add_annotation(x=r.median_importance, y=r.selection_frequency, text=html.escape(str(r.feature)),
                           showarrow=True, arrowhead=0, arrowcolor=MUTED, ax=0, ay=28 + 22 * (i % 4),
                           font=dict(size=11), bgcolor="rgba(255,255,255,0.85)")
    for t in (0.6, 0.9):
        fig.add_hline(y=t, line=dict(dash="dot", color=MUTED, width=1),
                      annotation_text=f"selected in {int(t * 100)}% of passes",
                      annotation_position="bottom left")     # the right holds the best features' names
    fig.update_layout(title="Selection frequency against median importance", height=480, showlegend=False,
                      xaxis_title="Median importance", yaxis_title="Selection frequency",
                      yaxis_range=[-0.05, 1.1])
    n_acc = sum(res.accepted)
    text = (f"<p>Each dot is a feature. Up: chosen among the top {res.top_k or 'k'} under more of the "
            f"{n_acc} accepted arrangements; right: larger share of the attribution. Features in the upper "
            "right do not depend on where they happened to sit in the pseudo-image.</p>")
    rows = []
    for r in res.summary.get("stability") or []:
        bound = finite_or_none(r.get("pfer_bound"))
        rows.append([f"&ge; {float(r['threshold']):.2f}", f"{int(r['n_selected']):,}",
                     "n/a" if bound is None else f"{bound:.3g}"])
    table = (_table(["Selection frequency", "Features selected", "Bound on false selections (PFER)"], rows)
             if rows else _note("findings.json holds no stability table."))
    if n_acc < 10:
        text += _note(f"Only {n_acc} accepted passes: selection frequencies move in steps of "
                      f"{1 / max(n_acc, 1):.2f}; run more passes for a finer stability estimate.")
    return text + _fig_html(fig, "plot-stability") + table


N_UP, N_DOWN = 8, 4     # features listed per group in the per-class table


def _per_class(res: Results) -> str:
    """What marks each group: per group its top features, up in the group first, then down (when
    findings_per_class.tsv has a ``direction`` column); and the heatmap of the top few, signed."""
    import plotly.graph_objects as go

    if res.per_class is None or res.per_class.empty:
        return _note("findings_per_class.tsv is absent: no per-class top features.")
    pc = res.per_class.sort_values(["class", "rank"], kind="stable")
    classes = [c for c in res.classes if c in set(pc["class"])] or list(dict.fromkeys(pc["class"]))
    has_dir = "direction" in pc.columns
    direction = ({(c, f): str(d).strip().lower() for c, f, d in zip(pc["class"], pc["feature"], pc["direction"])}
                 if has_dir else {})

    def chip(c, f) -> str:
        d = direction.get((c, f))
        arrow = {"up": "&#9650;", "down": "&#9660;"}.get(d, "")
        cls = {"up": "up", "down": "down"}.get(d, "")
        title = {"up": "higher in this group than in the rest", "down": "lower in this group than in the rest"}.get(d, "")
        return f'<span class="chip {cls}" title="{title}">{html.escape(str(f))}{arrow}</span>'

    unrecognised = _unrecognised_classes(res)

    def group(c) -> str:
        if c not in unrecognised:
            return html.escape(c)
        return (html.escape(c) + '<br><small class="caveat">held-out recall 0: the model does not recognise '
                "this group; its markers are weak evidence</small>")

    rows = []
    for c in classes:
        feats = list(pc.loc[pc["class"] == c, "feature"])
        if has_dir:
            up = [f for f in feats if direction.get((c, f)) == "up"][:N_UP]
            # scanpy's order puts the strongest down-markers last (most negative score): read from the end
            down = [f for f in reversed(feats) if direction.get((c, f)) == "down"][:N_DOWN]
            rows.append([group(c), " ".join(chip(c, f) for f in up) or "&mdash;",
                         " ".join(chip(c, f) for f in down) or "&mdash;"])
        else:
            rows.append([group(c), " ".join(chip(c, f) for f in feats[:N_UP])])
    headers = (["Group", "Up in the group (best first)", "Down in the group"] if has_dir
               else ["Group", "Top features (best first)"])
    table = _table(headers, rows, cls="plain per-class")
    what = ("the features ranked highest by the model's importance x the group's sample-level evidence "
            "(<code>-log10 sample_p</code>; the evidence alone where the model does not weigh in, see Samples)"
            if "sample_p" in pc.columns else "the features whose attribution towards that group is largest")
    intro = ("<p>For each group, " + what
             + (": <span class='chip up'>up&#9650;</span> higher in the group than in the rest, "
                "<span class='chip down'>down&#9660;</span> lower. Features up in the group come first."
                if has_dir else ". This run's findings_per_class.tsv records no direction (up or down in the "
                                "group): check a marker's expression before calling it up.")
             + " The whole per-group ranking is <code>findings_per_class.tsv</code>.</p>")

    genes: list[str] = []
    for c in classes:
        top = pc[pc["class"] == c]["feature"].head(N_PER_CLASS)
        genes += [g for g in top if g not in genes]
    value = {(c, f): float(v) for c, f, v in zip(pc["class"], pc["feature"], pc["median_importance"])}
    rank = {(c, f): int(v) for c, f, v in zip(pc["class"], pc["feature"], pc["rank"])}
    # Colour: with a score (what the per-class rank uses; its sign is the direction) the score as a share
    # of the class's largest |score|; else importance as a share of the class's largest, negative for
    # features down in the group. Either way every class shows its own markers.
    by_score = has_dir and "score" in pc.columns
    colour_col = "score" if by_score else "median_importance"
    colour = {(c, f): float(v) for c, f, v in zip(pc["class"], pc["feature"], pc[colour_col])}
    class_max = pc.assign(_a=pc[colour_col].abs()).groupby("class")["_a"].max().to_dict()
    z, hover = [], []
    for g in genes:
        zr, hr = [], []
        for c in classes:
            cmax = float(class_max.get(c, 0.0))
            cmax = cmax if math.isfinite(cmax) and cmax > 0 else 1.0
            v, col = value.get((c, g)), colour.get((c, g))
            d = direction.get((c, g))
            if col is None or not math.isfinite(col):
                zr.append(None)
            elif by_score:
                zr.append(col / cmax)
            else:
                zr.append((-1.0 if d == "down" else 1.0) * abs(col) / cmax)
            hr.append(f"{g} in {c}<br>" + ("not in this class's top list" if v is None else
                                          f"rank {rank[(c, g)]}, "
                                          + (f"score {col:.3g}, " if by_score else "")
                                          + f"median importance {v:.4g}"
                                          + (f", {d} in the group" if d else "")))
        z.append(zr)
        hover.append(hr)
    if by_score:
        scale = dict(colorscale="RdBu", reversescale=True, zmin=-1, zmax=1,
                     colorbar=dict(title="Score / class's<br>largest |score|<br>(- down)"))
    elif has_dir:
        scale = dict(colorscale="RdBu", reversescale=True, zmin=-1, zmax=1,
                     colorbar=dict(title="Share of the<br>class's top<br>(- down)"))
    else:
        scale = dict(colorscale="Blues", zmin=0, zmax=1, colorbar=dict(title="Share of the<br>class's top"))
    fig = go.Figure(go.Heatmap(z=z, x=classes, y=genes, text=hover, hoverinfo="text", xgap=1, ygap=1, **scale))
    fig.update_layout(title=f"Top {N_PER_CLASS} features of each group", height=max(360, 18 * len(genes) + 160),
                      yaxis=dict(autorange="reversed"), xaxis=dict(tickangle=-35))
    return intro + table + _fig_html(fig, "plot-per-class")


def _unrecognised_classes(res: Results) -> set[str]:
    """Groups the ensembled model never predicts correctly on held-out cells (evaluation.json per-class
    recall 0 with held-out cells of the group)."""
    out = set()
    for c, v in ((res.evaluation or {}).get("per_class") or {}).items():
        recall, support = (v or {}).get("recall"), (v or {}).get("support")
        if isinstance(recall, (int, float)) and recall == 0 and (support is None or support > 0):
            out.add(str(c))
    return out


def _rss(res: Results) -> str:
    import plotly.graph_objects as go

    rss = res.dataset["rss"]
    labels = list(rss)
    sets = list(next(iter(rss.values())))
    z = [[rss[label].get(g) for label in labels] for g in sets]
    fig = go.Figure(go.Heatmap(z=z, x=labels, y=sets, colorscale="Viridis", zmin=0, zmax=1,
                               colorbar=dict(title="RSS")))
    fig.update_layout(title="Regulon specificity score per label", height=max(320, 22 * len(sets) + 160),
                      yaxis=dict(autorange="reversed"), xaxis=dict(tickangle=-35))
    return ("<p>Regulon specificity score (1 - Jensen-Shannon distance between a set's AUCell scores and "
            "the label's indicator): 1 means the set is active in that label only.</p>"
            + _fig_html(fig, "plot-rss"))


def _confusion(res: Results) -> str:
    import plotly.graph_objects as go

    ev = res.evaluation
    if not ev or not ev.get("confusion_matrix"):
        return _note("evaluation.json is absent: no confusion matrix of the ensembled classifier.")
    cm = np.asarray(ev["confusion_matrix"], dtype=float)
    classes = [str(c) for c in ev.get("classes") or res.classes]
    row = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, row, out=np.zeros_like(cm), where=row > 0)
    fig = go.Figure(go.Heatmap(z=frac, x=classes, y=classes, text=cm.astype(int), texttemplate="%{text}",
                               colorscale="Blues", zmin=0, zmax=1, colorbar=dict(title="Share of<br>true class"),
                               hovertemplate="true %{y}<br>predicted %{x}<br>%{text} cells"
                                             " (%{z:.0%} of the class)<extra></extra>"))
    fig.update_layout(title=f"Held-out cells, softmax averaged over {ev.get('n_passes', '?')} arrangements",
                      height=max(420, 34 * len(classes) + 180), xaxis_title="Predicted",
                      yaxis=dict(title="True", autorange="reversed"), xaxis=dict(tickangle=-35))
    per_class = ev.get("per_class") or {}
    rows = [[html.escape(c), f"{v.get('precision', float('nan')):.2f}", f"{v.get('recall', float('nan')):.2f}",
             f"{v.get('f1', float('nan')):.2f}", str(v.get("support", ""))] for c, v in per_class.items()]
    if res.summary.get("sample_level"):
        bal = ev.get("balanced_accuracy")
        text = (f"<p>Accuracy {_pct(ev.get('accuracy'))}"
                + (f" (balanced accuracy {_pct(bal)})" if isinstance(bal, (int, float)) else "")
                + f" {html.escape(heldout_text(res))}: cells of a held-out "
                "sample are not independent, so this accuracy rests on those few samples. (Always guessing the "
                f"largest class would score {_pct(ev.get('majority_rate'))} on these cells; with a sample key the "
                "gate is balanced accuracy against chance, see Passes.)</p>")
    else:
        text = (f"<p>Accuracy {_pct(ev.get('accuracy'))} on {ev.get('heldout_size', int(cm.sum()))} held-out cells "
                f"(always guessing the largest class: {_pct(ev.get('majority_rate'))}).</p>")
    table = _table(["Class", "Precision", "Recall", "F1", "Cells"], rows) if rows else ""
    return text + _fig_html(fig, "plot-confusion") + table


def _passes(res: Results) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not res.accuracies:
        return _note("findings.json lists no passes.")
    idx = res.summary.get("pass_indices") or list(range(len(res.accuracies)))
    stops = res.summary.get("stop_epochs") or [p.stop_epoch for p in res.passes]
    bests = res.summary.get("best_epochs") or [p.best_epoch for p in res.passes]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.6, 0.4])
    names = [mqc.pass_name(i) for i in idx]
    fig.add_trace(go.Bar(x=names, y=res.accuracies, name="held-out accuracy",
                         marker_color=[ACCEPTED if a else REJECTED for a in res.accepted],
                         customdata=["accepted" if a else "rejected" for a in res.accepted],
                         hovertemplate="%{x}: %{y:.1%} (%{customdata})<extra></extra>"), row=1, col=1)
    samples_key = with_samples(res)
    gates = [p.gate for p in res.passes if p.gate]
    if samples_key and len(gates) == len(res.passes) == len(names):
        fig.add_trace(go.Scatter(x=names, y=[float(g["score"]) for g in gates], mode="markers",
                                 name="balanced accuracy (the gate)", marker=dict(symbol="diamond", size=10,
                                                                                  color=ACCENT),
                                 hovertemplate="%{x}: balanced accuracy %{y:.1%}<extra></extra>"), row=1, col=1)
    chance = {round(float(g["chance"]), 6) for g in gates if g.get("chance") is not None}
    majority = (res.evaluation or {}).get("majority_rate")
    if samples_key:
        if len(chance) == 1:
            c = next(iter(chance))
            fig.add_hline(y=c, line=dict(dash="dash", color="#444444", width=1), row=1, col=1, layer="above",
                          annotation_text=f"chance, 1 / labels ({c:.0%})", annotation_position="top right")
    elif majority is not None:
        fig.add_hline(y=majority, line=dict(dash="dash", color="#444444", width=1), row=1, col=1, layer="above",
                      annotation_text=f"always the majority class ({majority:.0%})",
                      annotation_position="top right")
    if stops:
        fig.add_trace(go.Scatter(x=names, y=stops, mode="markers", name="stop epoch",
                                 marker=dict(symbol="square", color=ACCENT)), row=2, col=1)
    if bests:
        fig.add_trace(go.Scatter(x=names, y=bests, mode="markers", name="best epoch (weights kept)",
                                 marker=dict(symbol="diamond-open", size=10, color=ACCEPTED)), row=2, col=1)
    fig.update_yaxes(title_text="Accuracy", range=[0, 1.02], tickformat=".0%", row=1, col=1)
    fig.update_yaxes(title_text="Epoch", rangemode="tozero", row=2, col=1)
    fig.update_layout(title="Accuracy and stop epoch per pass", height=520,
                      legend=dict(orientation="h", y=-0.12))
    min_acc = ((res.summary.get("config") or {}).get("run") or {}).get("min_accuracy")
    floor = f" and at least {_pct(min_acc)}" if isinstance(min_acc, (int, float)) and min_acc > 0 else ""
    if samples_key:
        gate = ("The gate, with a sample key, is <b>balanced accuracy</b> (the mean recall over the held-out "
                f"labels, diamonds) on the held-out samples{floor}, compared with chance (1 / labels), not accuracy "
                "with the majority class: the held-out set is a few whole samples whose sizes set the majority rate "
                "by accident. Bars: plain accuracy. Green passes beat chance and enter the ranking.")
        where = f"the same held-out cells ({html.escape(heldout_text(res).removeprefix('on '))})"
    else:
        gate = (f"Green passes beat the gate (accuracy above always guessing the majority class{floor}) and "
                "enter the ranking.")
        where = "the same held-out cells"
    return (f"<p>Every pass is one random arrangement of the features, trained from scratch and judged on {where}. "
            + gate + "</p>" + _fig_html(fig, "plot-passes"))


def _loss(res: Results) -> str:
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    if not res.passes:
        return _note("No pass files: no loss curves.")
    fig = go.Figure()
    palette = qualitative.Safe
    for n, p in enumerate(res.passes):
        colour, name = palette[n % len(palette)], mqc.pass_name(p.pass_index)
        epochs = list(range(1, len(p.val_loss) + 1))
        fig.add_trace(go.Scatter(x=epochs, y=p.val_loss, mode="lines", name=f"{name} validation",
                                 legendgroup=name, line=dict(color=colour)))
        fig.add_trace(go.Scatter(x=epochs, y=p.train_loss, mode="lines", name=f"{name} training",
                                 legendgroup=name, line=dict(color=colour, dash="dash"), opacity=0.6))
        if 1 <= p.best_epoch <= len(p.val_loss):
            fig.add_trace(go.Scatter(x=[p.best_epoch], y=[p.val_loss[p.best_epoch - 1]], mode="markers",
                                     legendgroup=name, showlegend=False, marker=dict(color=colour, size=9),
                                     hovertemplate=f"{name}: best epoch %{{x}} (weights kept)<extra></extra>"))
        fig.add_vline(x=p.stop_epoch, line=dict(color=colour, dash="dot", width=1))
    max_epoch = max(len(p.val_loss) for p in res.passes)
    fig.update_layout(title="Training (dashed) and validation (solid) loss; dots: best epoch, "
                            "dotted lines: stop epoch", height=460, yaxis_title="Cross-entropy loss",
                      xaxis=dict(title="Epoch", dtick=1 if max_epoch <= 20 else None, rangemode="tozero"))
    return _fig_html(fig, "plot-loss")


def _attribution_map(res: Results) -> str:
    import plotly.graph_objects as go

    from deepmapper.model.transform import arrangement, square_side, to_images

    n = res.n_features
    seed = _pass0_seed(res)
    if seed is None:
        return _note("No pass 0 and no seed in findings.json: cannot lay out the attribution map.")
    order = res.feature_order
    if order is None:
        return _note("dataset.h5ad is absent: the dataset's feature order (needed to place features on "
                     "pass 0's image) is unknown, so no attribution map.")
    perm = arrangement(n, seed)
    side = square_side(n)
    imp_by_feature = dict(zip(res.findings["feature"], res.findings["median_importance"]))
    values = np.array([imp_by_feature[f] for f in order], dtype=np.float64)
    image = to_images(values[None, :], perm)[0, 0]
    # Pixel p shows feature perm[p] (transform's convention); padding pixels have no feature.
    names = np.array([order[j] for j in perm] + [""] * (side * side - n), dtype=object).reshape(side, side)
    # Padding pixels hold no feature: show them blank, not as zero importance.
    z = image.astype(float)
    z.flat[n:] = np.nan
    fig = go.Figure(go.Heatmap(z=z, text=names, colorscale="Inferno", hovertemplate="%{text}<br>median importance"
                                                                                    " %{z:.4g}<extra></extra>",
                               colorbar=dict(title="Median<br>importance")))
    inv = np.empty(n, dtype=np.int64)
    inv[perm] = np.arange(n)
    pos = {f: int(inv[j]) for j, f in enumerate(order)}
    for f in res.findings["feature"].head(N_LABELLED):
        pix = pos[f]
        fig.add_annotation(x=pix % side, y=pix // side, text=html.escape(str(f)), showarrow=True, arrowhead=0,
                           arrowcolor="#38b000", ax=18, ay=-18, font=dict(color="#ffffff", size=11),
                           bgcolor="rgba(0,0,0,0.55)")
    fig.update_layout(title=f"Median importance on pass 0's {side}x{side} pseudo-image (arrangement seed {seed})",
                      height=680,
                      xaxis=dict(range=[-0.5, side - 0.5], constrain="domain", showticklabels=False,
                                 showgrid=False, ticks=""),
                      yaxis=dict(range=[side - 0.5, -0.5], scaleanchor="x", constrain="domain",
                                 showticklabels=False, showgrid=False, ticks=""))
    return (f"<p>Each pixel is one feature placed where pass 0's random arrangement (seed {seed}) put it; "
            f"brightness is its median importance over all passes. The {N_LABELLED} best-ranked features are "
            "named. Bright pixels are scattered: under another arrangement they sit elsewhere, which is why "
            "importance is accumulated over arrangements.</p>" + _fig_html(fig, "plot-attribution-map"))


def _pass0_seed(res: Results) -> int | None:
    for p in res.passes:
        if p.pass_index == 0:
            return p.seed
    run_seed = ((res.summary.get("config") or {}).get("run") or {}).get("seed")
    return None if run_seed is None else int(run_seed)


def _baselines(res: Results) -> str:
    import plotly.graph_objects as go

    if not res.baselines:
        return _note("No baselines/ files: no comparison with logistic regression or Wilcoxon.")
    ours = list(res.findings["feature"].head(N_SIDE_BY_SIDE))
    cols = {"DeepMapper": ours}
    uncalibrated = mqc.screen_not_calibrated(res)
    for m, df in res.baselines.items():
        if m == "interactions" and uncalibrated:
            continue        # all-zero scores: nothing was screened, so no ranking to show
        cols[m.capitalize()] = list(df["feature"].head(N_SIDE_BY_SIDE))
    ours_set = set(ours)
    rows = []
    for i in range(N_SIDE_BY_SIDE):
        row = [str(i + 1)]
        for name, feats in cols.items():
            if i >= len(feats):
                row.append("")
                continue
            f = html.escape(feats[i])
            shared = name != "DeepMapper" and feats[i] in ours_set
            row.append(f'<span class="shared">{f}</span>' if shared else f)
        rows.append(row)
    table = _table(["Rank"] + list(cols), rows, cls="plain side-by-side")
    agree = mqc.agreement(res)
    fig = go.Figure()
    labels = {"logistic": "Logistic regression", "wilcoxon": "Wilcoxon", "interactions": "Pair screen alone",
              "chance": "Chance"}
    for m, d in agree.items():
        fig.add_trace(go.Scatter(x=list(d), y=list(d.values()), mode="lines+markers", name=labels.get(m, m),
                                 line=dict(dash="dash", color=MUTED) if m == "chance" else None))
    fig.update_layout(title="Share of DeepMapper's top k also in the baseline's top k", height=400,
                      xaxis=dict(type="log", title="k", tickvals=list(next(iter(agree.values())))),
                      yaxis=dict(title="Overlap", range=[0, 1.02],
                                                                    tickformat=".0%"))
    acc = (res.baselines_meta.get("logistic") or {}).get("accuracy")
    text = ("<p>The same question answered by simpler methods: penalised logistic regression on all features"
            + (f" (held-out accuracy {_pct(acc)})" if acc is not None else "")
            + ", a per-class Wilcoxon test"
            + (" and the pair screen alone (genes by their best screened pair)"
               if "interactions" in res.baselines and not uncalibrated else "")
            + ". <span class='shared'>Highlighted</span>: also in DeepMapper's "
              f"top {N_SIDE_BY_SIDE}."
            + (" The pair screen alone (<code>baselines/interactions.tsv</code>) is not shown: not tested, the "
               "screen could not be calibrated (see Gene pairs), and its scores are all 0."
               if "interactions" in res.baselines and uncalibrated else "")
            + (f" Note: {WIDE_START_TEXT}." if acc is not None and _wide_start_logistic(res) else "")
            + "</p>")
    return text + table + _fig_html(fig, "plot-baselines")


N_PAIR_SCATTERS = 6
RUN_INFO_HIDDEN = {"state", "pid", "resume_key"}


def _pairs(res: Results) -> str:
    """The top pairs table and, per top pair, gene a against gene b coloured by class."""
    import plotly.graph_objects as go
    rows = mqc.pair_rows(res)
    uncalibrated = mqc.screen_not_calibrated(res)
    if not rows:
        if uncalibrated:
            return _note("The pair screen was not calibrated, so no gene pair was tested (this is not a "
                         f"negative result): {uncalibrated}.")
        if res.interactions is None:
            return _note("This run screened no gene pairs (--no-interactions, or no interactions.tsv).")
        return _note("The pair screen found no pair below the q threshold: no gene pair differs in its "
                     "within-class correlation more than the label permutations allow.")

    def fmt(v, spec):
        return "" if v is None else format(v, spec)

    table = _table(["Rank", "Gene a", "Gene b", "Class", "Screen t", "q", "Corr. in class", "Corr. rest",
                    "Importance"],
                   [[r["rank"], html.escape(r["feature_a"]), html.escape(r["feature_b"]), html.escape(r["class"]),
                     fmt(r["score"], ".2f"), fmt(r["q_value"], ".3g"), fmt(r["corr_in_class"], ".2f"),
                     fmt(r["corr_rest"], ".2f"), fmt(r["median_importance"], ".3g")] for r in rows])
    text = ("<p>Pairs of genes whose correlation <i>inside</i> a class differs from the rest: each gene "
            "alone may not separate the classes at all. Found by the pair screen on training cells "
            "(values standardised within each class, calibrated by permuting the labels; q: "
            "Benjamini-Hochberg), placed side by side in every arrangement, and ranked by the "
            "attribution of the pair's product channel over the passes. Each gene's own row in the "
            "ranked table says whether it counts through its pair (<i>interaction</i>), alone "
            "(<i>marginal</i>) or both.</p>")
    figs = []
    labels = res.pair_labels
    for i, r in enumerate(rows[:N_PAIR_SCATTERS]):
        a, b = res.pair_values.get(r["feature_a"]), res.pair_values.get(r["feature_b"])
        if a is None or b is None:
            continue
        # The pair's class against the rest: two colours and a one-line legend, not one colour per
        # class (a 10-class legend beside each panel left the scatter a third of its width).
        fig = go.Figure()
        for name, inside, colour, size, alpha in (("rest", False, "#adb5bd", 4, 0.35),
                                                  (r["class"], True, REJECTED, 5, 0.85)):
            mask = [(lab == r["class"]) == inside for lab in labels]
            fig.add_trace(go.Scattergl(
                x=[v for v, m in zip(a, mask) if m], y=[v for v, m in zip(b, mask) if m], mode="markers",
                name=name, marker=dict(size=size, color=colour, opacity=alpha)))
        fig.update_layout(height=360, xaxis_title=r["feature_a"], yaxis_title=r["feature_b"],
                          legend=dict(orientation="h", x=0, y=1.0, yanchor="bottom", font=dict(size=11)))
        # the name above the figure, not in it: plotly's tool bar covers a title in a panel this narrow
        figs.append(f'<div><div class="pair-title">{html.escape(r["feature_a"])} x {html.escape(r["feature_b"])} '
                    f'<small>({html.escape(r["class"])})</small></div>{_fig_html(fig, f"plot-pair-{i}")}</div>')
    if not figs:
        scatter = _note("dataset.h5ad is absent: no scatter of the pairs' genes.")
    else:
        scatter = ("<p>Per pair, every plotted cell's expression of gene a against gene b: the pair's class "
                   "in colour, every other cell grey. A flipped or lost correlation shows as a differently "
                   "tilted cloud.</p>" + '<div class="pair-grid">' + "".join(figs) + "</div>")
    return text + table + scatter


def _run(res: Results) -> str:
    params = _table(["Parameter", "Value"], [[html.escape(k), f"<code>{html.escape(v)}</code>"]
                                            for k, v in mqc.parameter_rows(res)])
    versions = _table(["Software", "Version"], [[html.escape(k), html.escape(v)]
                                               for k, v in sorted(mqc.software_versions(res).items())])
    info = ""
    if res.run_info:
        # The report is written inside the run, before run_info.json's final state: its 'state'
        # would read "running" in every report; pid and resume key are the run's bookkeeping.
        keep = {k: v for k, v in res.run_info.items()
                if not isinstance(v, (dict, list)) and k not in RUN_INFO_HIDDEN}
        info = "<h3>Run</h3>" + _table(["Item", "Value"], [[html.escape(str(k)), html.escape(str(v))]
                                                          for k, v in sorted(keep.items())])
    return ('<div class="two-col"><div><h3>Parameters and input</h3>' + params + "</div><div><h3>Software</h3>"
            + versions + info + "</div></div>")
