"""The pair screen, the pair arrangement, the pair channel, and pairs in findings and the report.

Data: small seeded Gaussian matrices (statistic identities, null calibration) and
``deepmapper.datasets.synthetic`` planted data with pairs whose correlation flips in one
class (end to end). One thread, few epochs.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepmapper.engine import interactions
from deepmapper.model import transform
from deepmapper.config import Config, InteractionConfig, step_params
from deepmapper.errors import ConfigError

torch = pytest.importorskip("torch")


def _within_class_z(X, codes, statistic="value"):
    from scipy import stats

    Z = np.empty(X.shape, np.float64)
    for c in np.unique(codes):
        m = codes == c
        x = X[m].astype(np.float64)
        if statistic == "rank":       # normal scores of the within-class mid-ranks
            x = stats.norm.ppf((stats.rankdata(x, axis=0) - 0.5) / len(x))
        sd = x.std(0)
        Z[m] = np.where(sd > 1e-8, (x - x.mean(0)) / np.where(sd > 1e-8, sd, 1.0), 0.0)
    return Z


def _screen(X, codes, n_classes, **kw):
    cfg = InteractionConfig(**{"min_detected": 0.0, "permutations": 20, **kw.pop("cfg", {})})
    names = [f"f{i}" for i in range(X.shape[1])]
    classes = [f"c{k}" for k in range(n_classes)]
    return interactions.screen(X, codes, classes, names, cells=np.arange(X.shape[0]), cfg=cfg, progress=False,
                               device=torch.device("cpu"), **kw)


@pytest.mark.parametrize("statistic", ["rank", "value"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_statistic_equals_welch_t_of_the_within_class_products(n_classes, statistic):
    from scipy import stats

    rng = np.random.default_rng(3)
    n, p = 240, 9
    X = rng.normal(size=(n, p)).astype(np.float32) * rng.uniform(0.5, 3, p).astype(np.float32)
    codes = rng.integers(0, n_classes, n)
    X[codes == 1, 4] = 0.7 * X[codes == 1, 2] + 0.3 * X[codes == 1, 4]
    # count-like ties: a third of one feature's values are exactly zero (they share their mid-rank)
    X[rng.random(n) < 0.33, 6] = 0.0
    res = _screen(X, codes, n_classes, keep=10_000, cfg={"statistic": statistic})
    assert res.n_tests == (1 if n_classes == 2 else n_classes) * p * (p - 1) // 2
    assert len(res.table) == res.n_tests
    Z = _within_class_z(X, codes, statistic)
    for r in res.table.itertuples(index=False):
        i, j, c = int(r.feature_a[1:]), int(r.feature_b[1:]), int(r[2][1:])
        prod = Z[:, i] * Z[:, j]
        expect = stats.ttest_ind(prod[codes == c], prod[codes != c], equal_var=False).statistic
        assert r.score == pytest.approx(expect, rel=2e-3, abs=2e-4)
        assert r.corr_in_class == pytest.approx(prod[codes == c].mean(), abs=1e-4)
    # two classes: one test, reported for the first class
    if n_classes == 2:
        assert set(res.table["class"]) == {"c0"}
    best = res.table.iloc[0]
    assert {best.feature_a, best.feature_b} == {"f2", "f4"} and best.q_value < 0.05


def test_null_p_values_are_uniform_and_no_pair_passes():
    from scipy import stats

    rng = np.random.default_rng(11)
    X = rng.normal(size=(300, 40)).astype(np.float32)
    codes = rng.integers(0, 3, 300)
    res = _screen(X, codes, 3, keep=100_000)
    assert len(res.table) == res.n_tests == 3 * 40 * 39 // 2
    ks = stats.kstest(res.table["p_value"], "uniform")
    assert ks.statistic < 0.06, ks
    assert (res.table["q_value"] >= 0.05).all()
    assert len(res.null_max) == 20


def test_marginal_markers_make_no_pair_within_classes():
    """Two markers of a class, one up and one down, are independent inside every class: standardised
    within classes they make no pair (standardised over all cells they would)."""
    rng = np.random.default_rng(5)
    n = 600
    codes = rng.integers(0, 3, n)
    X = rng.normal(size=(n, 12)).astype(np.float32)
    X[:, 0] += 3.0 * (codes == 0)
    X[:, 1] -= 3.0 * (codes == 0)
    res = _screen(X, codes, 3, keep=1000)
    assert (res.table["q_value"] >= 0.05).all()
    z = (X - X.mean(0)) / X.std(0)                # the wrong standardisation shows the artefact
    prod = z[:, 0] * z[:, 1]
    from scipy import stats

    assert abs(stats.ttest_ind(prod[codes == 0], prod[codes != 0], equal_var=False).statistic) > 10


def test_blocked_sparse_and_dense_screens_agree(monkeypatch):
    import scipy.sparse as sp

    rng = np.random.default_rng(2)
    X = rng.poisson(0.8, size=(200, 37)).astype(np.float32)
    codes = rng.integers(0, 3, 200)
    whole = _screen(X, codes, 3, keep=500).table
    monkeypatch.setattr(interactions, "MAX_BLOCK", 16)
    monkeypatch.setattr(interactions, "DENSE_LIMIT_BYTES", 0)      # column blocks from the CSC matrix
    monkeypatch.setattr(interactions, "RANK_CHUNK", 150)           # the ranking in chunks of two columns
    blocked = _screen(sp.csr_matrix(X), codes, 3, keep=500).table
    pd.testing.assert_frame_equal(whole[["feature_a", "feature_b", "class"]],
                                  blocked[["feature_a", "feature_b", "class"]])
    np.testing.assert_allclose(whole["score"], blocked["score"], rtol=1e-4, atol=1e-5)


def test_prefilter_is_label_free_detection_then_variance():
    rng = np.random.default_rng(0)
    X = rng.normal(5, 1, size=(100, 6))
    X[:95, 0] = 0.0                   # detected in 5% of cells
    X[:, 1] *= 10                      # the most variable
    X[:, 2] = 3.0                      # constant
    sel = interactions.prefilter(X, 0.1, 2)
    assert 0 not in sel and 2 not in sel and 1 in sel and len(sel) == 2
    assert list(interactions.prefilter(X, 0.0, 10)) == [0, 1, 3, 4, 5]


def test_screen_cells_never_include_held_out_cells():
    codes = np.repeat([0, 1, 2], 100)
    test = np.arange(0, 300, 5)
    cells = interactions.screen_cells(codes, test, 10_000, seed=0)
    assert not set(cells) & set(test) and len(cells) == 240
    few = interactions.screen_cells(codes, test, 60, seed=0)
    assert len(few) == 60 and not set(few) & set(test)
    assert np.array_equal(few, interactions.screen_cells(codes, test, 60, seed=0))


def test_select_pairs_keeps_each_feature_once_best_first():
    table = pd.DataFrame({"feature_a": ["a", "a", "c", "e"], "feature_b": ["b", "c", "d", "f"],
                          "class": ["x"] * 4, "score": [9.0, -8.0, 7.0, 6.0], "q_value": [0.01, 0.01, 0.02, 0.2]})
    pairs, classes, _ = interactions.select_pairs(table, list("abcdef"), q_threshold=0.05, max_pairs=10)
    assert pairs.tolist() == [[0, 1], [2, 3]] and classes == ["x", "x"]
    pairs, _, _ = interactions.select_pairs(table, list("abcdef"), q_threshold=0.05, max_pairs=1)
    assert pairs.tolist() == [[0, 1]]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(4, 400), m=st.integers(0, 30), seed=st.integers(0, 10_000))
def test_screened_pairs_are_adjacent_in_every_arrangement(n, m, seed):
    m = min(m, transform.max_pairs(n))
    feats = np.random.default_rng(seed).permutation(n)[:2 * m].reshape(-1, 2)
    for t in range(3):
        perm = transform.pair_arrangement(n, feats, seed + t)
        assert sorted(perm.tolist()) == list(range(n))
        side = transform.square_side(n)
        inv = transform.inverse(perm)
        for a, b in feats:
            lo, hi = sorted((inv[a], inv[b]))
            assert hi - lo == 1 and lo // side == hi // side
        left = transform.pair_pixels(perm, feats)
        assert all(perm[p] in pair and perm[p + 1] in pair for p, pair in zip(left, feats.tolist()))
    if m == 0:
        assert np.array_equal(transform.pair_arrangement(n, feats, seed), transform.arrangement(n, seed))
    if m > 0 and n > 16:   # positions are re-drawn per pass
        assert not np.array_equal(transform.pair_arrangement(n, feats, seed),
                                  transform.pair_arrangement(n, feats, seed + 1))


@pytest.mark.parametrize("params, field", [
    ({"interaction_q": 0.0}, "interactions.q_threshold"),
    ({"interaction_q": 1.5}, "interactions.q_threshold"),
    ({"interaction_max_features": 1}, "interactions.max_features"),
    ({"interaction_permutations": 5}, "interactions.permutations"),
    ({"interaction_min_detected": 1.0}, "interactions.min_detected"),
])
def test_bad_settings_give_one_clear_error(params, field):
    with pytest.raises(ConfigError) as err:
        Config().with_params(params)
    assert err.value.field == field and "\n" not in str(err.value)


def test_stacked_forward_with_the_pair_channel_equals_each_member():
    from deepmapper.model import backbones
    from deepmapper.model import stacked
    from deepmapper.config import BackboneConfig

    side, k = 7, 3
    models = []
    for t in range(k):
        torch.manual_seed(t)
        models.append(backbones.build(BackboneConfig(kind="cnn", width=8), 4, side * side, channels=2))
    gens = [torch.Generator().manual_seed(t) for t in range(k)]
    x = torch.randn(5, 2 * k, side, side)
    for grouped in (False, True):
        net = stacked.Stacked(models, gens, side, grouped=grouped, channels=2)
        net.train(False)
        with torch.no_grad():
            expect = torch.stack([m.eval()(x[:, 2 * j:2 * j + 2]) for j, m in enumerate(models)])
            torch.testing.assert_close(net.forward(x), expect, atol=1e-5, rtol=1e-4)
    with pytest.raises(ConfigError):
        backbones.build(BackboneConfig(kind="vit"), 4, 49, channels=2)


# -- end to end on planted pairs ------------------------------------------------------------

FAST = {"passes": 2, "epochs": 3, "min_epochs": 1, "patience": 2, "ig_steps": 4, "attribution_max_samples": 40,
        "threads": 1, "backbone_width": 8, "interaction_max_pairs": 4}


@pytest.fixture(scope="module")
def planted_path(tmp_path_factory):
    from deepmapper.datasets.synthetic import planted

    adata, truth = planted(400, 120, n_marginal=4, n_combo=4, n_classes=2, seed=3, effect=1.0, sparsity=0.3,
                           correlation=0.95)
    path = tmp_path_factory.mktemp("planted") / "planted.h5ad"
    adata.write_h5ad(path)
    return path, truth


def test_pair_channel_training_stacked_equals_one_at_a_time(planted_path):
    from deepmapper import io
    from deepmapper.engine.data import prepare
    from deepmapper.pipeline.runner import use_interactions
    from deepmapper.engine.train import train_passes

    path, truth = planted_path
    adata = io.read_input(str(path), label_key="label")
    results = {}
    for per_step in (1, 2):
        cfg = Config().with_params({**FAST, "passes_per_step": per_step})
        data = prepare(adata, cfg)
        screen = interactions.screen_prepared(data, cfg, progress=False, device=torch.device("cpu"))
        use_interactions(data, cfg, screen.table)
        assert data.n_pairs == 2
        names = {frozenset((data.feature_names[a], data.feature_names[b])) for a, b in data.pairs}
        assert names == {frozenset(p) for p in truth["combo_pairs"]}
        results[per_step] = train_passes(data, cfg, [0, 1], progress=False, device=torch.device("cpu"))
    for a, b in zip(results[1], results[2]):
        np.testing.assert_allclose(a.heldout_proba, b.heldout_proba, atol=1e-2)
        np.testing.assert_allclose(a.pair_importance, b.pair_importance,
                                   atol=0.02 * float(np.abs(b.pair_importance).max()))
        assert a.meta["pair_channel"] and a.pairs.shape == (2, 2) and a.pair_class_importance.shape == (2, 2)


@pytest.mark.parametrize("prefer", ["products", "features"])
def test_logistic_start_keeps_the_pair_products_only_when_validation_prefers_them(planted_path, monkeypatch, prefer):
    """The pass fits its start with and without the products and keeps the lower validation log-loss:
    on planted pairs the products win on the real losses; made to lose, the pair channel's wide
    weights are zero and the pass records it."""
    from deepmapper import io
    from deepmapper.engine import train, wide_start
    from deepmapper.engine.data import prepare
    from deepmapper.pipeline.runner import use_interactions

    path, _ = planted_path
    cfg = Config().with_params(FAST)
    data = prepare(io.read_input(str(path), label_key="label"), cfg)
    use_interactions(data, cfg, interactions.screen_prepared(data, cfg, progress=False,
                                                             device=torch.device("cpu")).table)
    real = wide_start.validation_log_loss
    seen = []

    def losses(model, x, codes):
        with_products = x.shape[1] > data.n_features
        seen.append((with_products, real(model, x, codes)))
        if prefer == "features":
            return 0.0 if not with_products else 1.0
        return real(model, x, codes)

    monkeypatch.setattr(wide_start, "validation_log_loss", losses)
    (result,) = train.train_passes(data, cfg, [0], progress=False, device=torch.device("cpu"))
    by_kind = dict(seen)
    if prefer == "products":     # planted pairs: the real validation losses prefer the products
        assert by_kind[True] < by_kind[False]
        assert result.meta["pair_start"] is True
    else:
        assert result.meta["pair_start"] is False
        g = train._setup_group(data, cfg, [0], torch.device("cpu"))
        wide = g.net.params["wide.weight"][0].reshape(data.n_classes, 2, -1)
        assert float(wide[:, 1].abs().sum()) == 0.0 and float(wide[:, 0].abs().sum()) > 0.0


def test_run_and_chained_steps_give_the_same_bytes_and_pairs_reach_the_report(planted_path, tmp_path):
    from click.testing import CliRunner

    from deepmapper.cli import cli as main

    path, truth = planted_path
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in FAST.items()]
    cli = CliRunner()
    run_dir = tmp_path / "run"
    got = cli.invoke(main, ["run", "--input", str(path), "--label-key", "label", "--outdir", str(run_dir),
                            "--no-report", *flags], catch_exceptions=False)
    assert got.exit_code == 0, got.output
    steps = tmp_path / "steps"
    ds = steps / "dataset.h5ad"
    def step_flags(step):   # each step command takes only the settings of its step
        mine = set(step_params(step))
        return [f for f, k in zip(flags, FAST) if k in mine]

    for args in (["ingest", "--input", str(path), "--label-key", "label", "--out", str(ds)],
                 ["interactions", "--dataset", str(ds), "--outdir", str(steps), *step_flags("interactions")],
                 ["train-pass", "--dataset", str(ds), "--start", "0", "--count", "2", "--outdir",
                  str(steps / "passes"), "--interactions-tsv", str(steps / "interactions.tsv"),
                  *step_flags("train")],
                 ["accumulate", "--dataset", str(ds), "--passes-dir", str(steps / "passes"), "--outdir",
                  str(steps), *step_flags("accumulate")]):
        got = cli.invoke(main, args, catch_exceptions=False)
        assert got.exit_code == 0, got.output
    for name in ("interactions.tsv", "findings.tsv", "findings_pairs.tsv", "findings_per_class.tsv"):
        assert (run_dir / name).read_bytes() == (steps / name).read_bytes(), name
    findings = pd.read_csv(run_dir / "findings.tsv", sep="\t")
    assert {"kind", "partners"} <= set(findings.columns)
    pair_genes = set(truth["combo"])
    kinds = dict(zip(findings["feature"], findings["kind"]))
    assert {kinds[g] for g in pair_genes} <= {"interaction", "both"}
    assert {kinds[g] for g in truth["marginal"]} == {"marginal"}
    partner = dict(zip(findings["feature"], findings["partners"].fillna("")))
    a, b = truth["combo_pairs"][0]
    assert partner[a].startswith(b + " (")

    from deepmapper.results.report import write_report

    write_report(run_dir, run_dir, multiqc=False)
    page = (run_dir / "report.html").read_text()
    assert 'id="pairs"' in page and "plot-pair-0" in page and a in page
    mqc_table = (run_dir / "mqc" / "deepmapper_pairs_mqc.tsv") if (run_dir / "mqc").is_dir() else \
        next(run_dir.rglob("deepmapper_pairs_mqc.tsv"))
    assert f"{a} x {b}" in mqc_table.read_text() or f"{b} x {a}" in mqc_table.read_text()


def test_old_pass_files_without_pairs_still_read(tmp_path):
    from deepmapper.engine.passfile import PassResult, read_pass, write_pass

    r = PassResult(pass_index=0, seed=0, accuracy=0.5, accepted=True, stop_epoch=1, best_epoch=1,
                   early_stopped=False, importance=np.ones(3, np.float32), class_importance=np.ones((2, 3)),
                   train_loss=np.ones(1), val_loss=np.ones(1), heldout_index=np.arange(2),
                   heldout_proba=np.ones((2, 2)) / 2, classes=["a", "b"])
    path = write_pass(r, tmp_path)
    with np.load(path) as data:     # an older file: no pair arrays
        kept = {k: data[k] for k in data.files if not k.startswith("pair")}
    np.savez_compressed(path, **kept)
    back = read_pass(path)
    assert back.pairs.shape == (0, 2) and back.pair_importance.shape == (0,)


def test_table_text_keeps_the_q_values_that_decide_which_pairs_are_used():
    """With 20 permutations the best reachable q is just under 0.05: written with six digits it would
    read back as 0.05 and the model would drop a pair the screen passed."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(240, 9)).astype(np.float32)
    codes = rng.integers(0, 2, 240)               # two classes: one test per pair, one pair beats the null
    X[codes == 1, 4] = 0.7 * X[codes == 1, 2] + 0.3 * X[codes == 1, 4]
    res = _screen(X, codes, 2, keep=10_000)
    back = interactions.parse_table(interactions.table_text(res))
    np.testing.assert_array_equal(back["q_value"].to_numpy(), res.table["q_value"].to_numpy())
    assert 0.049 < res.table["q_value"].iloc[0] < 0.05
    pairs, _, _ = interactions.select_pairs(back, [f"f{i}" for i in range(9)], q_threshold=0.05, max_pairs=4)
    assert sorted(pairs.ravel().tolist()) == [2, 4]
