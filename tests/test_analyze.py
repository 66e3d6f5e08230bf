"""ufm.analyze (library in ufm/last_layer.py, CLI in ufm/analyze.py) against the solver's metrics,
theory, an independent brute-force implementation, itself in chunks, and bad files."""

import dataclasses
import json

import numpy as np
import pytest

import theory
import ufm
from ufm import generalized, last_layer, metrics
from ufm.analyze import main
from ufm.compare import predict

NC_NAMES = ("nc1", "nc2", "nc3", "w_norm", "h_norm")


def _imbalanced(K=4, d=6, counts=(3, 7, 1, 5), seed=0, scale=0.5, dtype=np.float64):
    """Random features around well-separated class means, shuffled labels; weight near the means."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(K), counts))
    centres = 3.0 * rng.normal(size=(K, d))
    features = (centres[labels] + scale * rng.normal(size=(labels.size, d))).astype(dtype)
    weight = centres + 0.3 * rng.normal(size=(K, d))
    bias = 0.1 * rng.normal(size=K)
    return features, labels, weight, bias


# --------------------------------------------------------------------------- UFM solutions


@pytest.fixture(scope="module")
def solved():
    problem = ufm.Problem(K=4, n=5, d=6, loss="ls", delta=0.1, lam_W=1e-2, lam_H=1e-3, lam_b=1e-2)
    return problem, ufm.solve(problem)


def test_ufm_solution_agrees_with_solver_metrics_and_theory(solved):
    problem, result = solved
    assert result.converged
    W, H, b = (np.asarray(x) for x in (result.W, result.H, result.b))
    labels = np.asarray(problem.labels())
    out = ufm.analyze(H.T, labels, W.T, b, loss="ls", delta=0.1, lam_W=1e-2, lam_H=1e-3, lam_b=1e-2)
    solver = metrics.collapse(W, H, labels, problem.K)
    # the same formulas on the same float64 numbers: equal to rounding (NC values at collapse are
    # themselves rounding-sized, ~1e-11, so absolute 1e-13; norms O(1), relative 1e-13)
    for name, value in zip(NC_NAMES, solver, strict=True):
        assert out.measured[name] == pytest.approx(float(value), rel=1e-13, abs=1e-13), name
    # theory: the solver stops at |grad| <= 1e-10 |grad0|, which leaves ~1e-10 relative in the point
    pred = predict(problem)
    assert out.applies and out.not_applicable == ()
    for name in ("w_norm", "h_norm", "a", "p_t", "p_n", "kappa_W", "kappa_H"):
        assert out.predicted[name] == getattr(pred, name), name  # the same prediction function
        assert out.relative[name] and out.error[name] < 1e-8, (name, out.error[name])
    for name in ("nc1", "nc2", "nc3"):
        assert out.predicted[name] == 0.0 and not out.relative[name] and out.error[name] < 1e-8
    # Theorem 4.2 measured on the blocks: kappa = K p_t (measured p_t), to the solver's accuracy
    assert out.measured["kappa_W"] == pytest.approx(out.measured["K_p_t"], rel=1e-8)
    assert out.measured["kappa_H"] == pytest.approx(out.measured["K_p_t"], rel=1e-8)
    assert out.measured["accuracy"] == out.measured["ncc_agreement"] == 1.0


def test_closed_form_minimizer_balanced_and_phase_boundary():
    K, n, d, delta, lam_W, lam_H = 5, 3, 7, 0.2, 1e-3, 1e-2
    W, H, b = theory.global_minimizer(K, n, d, delta=delta, lam_W=lam_W, lam_H=lam_H, seed=1)
    labels = np.repeat(np.arange(K), n)
    out = ufm.analyze(H.T, labels, W.T, b, loss="ls", delta=delta, lam_W=lam_W, lam_H=lam_H, spectra=False)
    # exact minimizer: only float64 rounding of O(1) numbers separates measured from predicted
    for name in ("w_norm", "h_norm", "a", "p_t", "p_n"):
        assert out.error[name] < 1e-12, (name, out.error[name])
    assert out.measured["a_residual"] < 1e-13 and out.measured["w_norm_cv"] < 1e-13
    # the same last layer judged against a setup past the phase boundary (c >= 1): zero predicted
    lam = 1.0 / (K * np.sqrt(n)) * 1.1  # K sqrt(n lam^2) = 1.1 > 1
    past = ufm.analyze(H.T, labels, W.T, b, loss="ce", lam_W=lam, lam_H=lam, spectra=False)
    assert past.predicted["w_norm"] == 0.0 and "nc1" not in past.predicted
    assert any("phase boundary" in reason for reason in past.not_applicable)
    assert not past.relative["w_norm"] and past.error["w_norm"] == pytest.approx(out.measured["w_norm"])


# --------------------------------------------------------------------------- brute force


def _brute_force(features, labels, weight, bias):
    """Every metric from its definition, with explicit loops over classes and samples."""
    N, d = features.shape
    K = weight.shape[0]
    means = np.array([features[labels == k].mean(axis=0) for k in range(K)])
    h_G = features.mean(axis=0)
    sigma_W = sum(np.outer(h - means[y], h - means[y]) for h, y in zip(features, labels, strict=True)) / N
    sigma_B = sum(np.outer(m - h_G, m - h_G) for m in means) / K
    nc1 = np.trace(sigma_W @ np.linalg.pinv(sigma_B, rcond=1e-10)) / K
    Hbar = (means - h_G).T
    G = weight @ Hbar
    M = np.eye(K) - np.ones((K, K)) / K
    nc2 = np.linalg.norm(G / np.linalg.norm(G) - M / np.sqrt(K - 1))
    nc3 = np.linalg.norm(weight.T / np.linalg.norm(weight) - Hbar / np.linalg.norm(Hbar))
    var = [np.mean([np.sum((h - means[k]) ** 2) for h in features[labels == k]]) for k in range(K)]
    cdnv = np.mean(
        [(var[k] + var[l]) / (2 * np.sum((means[k] - means[l]) ** 2)) for k in range(K) for l in range(k + 1, K)]
    )
    pred = [int(np.argmax(weight @ h + bias)) for h in features]
    nearest = [int(np.argmin([np.linalg.norm(h - m) for m in means])) for h in features]
    Zbar = np.array([weight @ m + bias for m in means]).T
    a = np.linalg.lstsq(M.reshape(-1, 1), (M @ Zbar).reshape(-1), rcond=None)[0][0]
    P = np.exp(Zbar) / np.exp(Zbar).sum(axis=0)
    cos = lambda V: [
        V[:, k] @ V[:, l] / np.linalg.norm(V[:, k]) / np.linalg.norm(V[:, l])
        for k in range(K)
        for l in range(K)
        if k != l
    ]
    wn, hn = np.linalg.norm(weight, axis=1), np.linalg.norm(Hbar, axis=0)
    return {
        "nc1": nc1,
        "nc1_trace": K * nc1,
        "nc2": nc2,
        "nc3": nc3,
        "cdnv": cdnv,
        "accuracy": np.mean(np.array(pred) == labels),
        "ncc_accuracy": np.mean(np.array(nearest) == labels),
        "ncc_agreement": np.mean(np.array(nearest) == np.array(pred)),
        "w_norm": wn.mean(),
        "h_norm": hn.mean(),
        "w_norm_cv": wn.std() / wn.mean(),
        "h_norm_cv": hn.std() / hn.mean(),
        "w_cos_std": np.std(cos(weight.T)),
        "h_cos_std": np.std(cos(Hbar)),
        "w_cos_shift": np.mean(np.abs(np.array(cos(weight.T)) + 1 / (K - 1))),
        "h_cos_shift": np.mean(np.abs(np.array(cos(Hbar)) + 1 / (K - 1))),
        "a": a,
        "p_t": np.mean(np.diag(P)),
        "p_n": np.mean(P[~np.eye(K, dtype=bool)]),
        "bias": bias.mean(),
        "bias_spread": np.max(np.abs(bias - bias.mean())),
    }


@pytest.mark.parametrize(
    "K,d,counts,scale", [(4, 6, (3, 7, 1, 5), 0.5), (3, 2, (10, 2, 4), 2.0), (5, 9, (4, 4, 9, 2, 6), 3.0)]
)
def test_imbalanced_against_brute_force_and_solver_metrics(K, d, counts, scale):
    features, labels, weight, bias = _imbalanced(K, d, counts, seed=K + d, scale=scale)
    out = ufm.analyze(features, labels, weight, bias, spectra=False)
    assert out.counts == counts and not out.balanced
    expected = _brute_force(features, labels, weight, bias)
    for name, value in expected.items():
        # different summation orders and a different pseudo-inverse route (SVD vs eigh): O(1e-13) relative;
        # counts-based fractions are exact
        assert out.measured[name] == pytest.approx(value, rel=1e-10, abs=1e-13), name
    solver = metrics.collapse(weight.T, features.T, labels, K)
    for name, value in zip(NC_NAMES, solver, strict=True):
        assert out.measured[name] == pytest.approx(float(value), rel=1e-12, abs=1e-14), name


def test_imbalanced_and_narrow_features_are_not_judged():
    """Focal loss has no exact class-mean reduction, so neither numerical prediction exists: for d < K with
    unequal counts the closed form for n = round(N/K) (at d = K) is shown, not judged, with the reasons."""
    features, labels, weight, bias = _imbalanced(K=3, d=2, counts=(10, 2, 4))
    setup = dict(loss="focal", gamma=1.0, lam_W=1e-3, lam_H=1e-3)
    out = ufm.analyze(features, labels, weight, bias, **setup, spectra=False)
    assert not out.applies and out.prediction_kind == last_layer.PREDICTION_CLOSED_FORM
    assert any(r.startswith("class counts differ (2 to 10") for r in out.not_applicable)
    assert any(r.startswith("d = 2 < K = 3") and "skipped: loss 'focal'" in r for r in out.not_applicable)
    assert out.predicted["w_norm"] == predict(ufm.Problem(K=3, n=5, d=2, lam_b=0.0, **setup)).w_norm
    assert out.verdict()["status"] == "no_prediction" and out.spread == {}


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64, 16])
def test_chunked_equals_in_memory(chunk_size):
    features, labels, weight, bias = _imbalanced(K=4, d=6, counts=(3, 7, 1, 5), scale=2.0)
    whole = ufm.analyze(features, labels, weight, bias, chunk_size=features.shape[0], spectra=False)
    parts = ufm.analyze(features, labels, weight, bias, chunk_size=chunk_size, spectra=False)
    assert parts.counts == whole.counts
    for name, value in whole.measured.items():
        # sums in another order: rounding only
        assert parts.measured[name] == pytest.approx(value, rel=1e-12, abs=1e-15), name


def test_float32_and_memory_mapped_input(tmp_path):
    features, labels, weight, bias = _imbalanced(K=4, d=6, counts=(30, 70, 10, 50), scale=2.0, dtype=np.float32)
    reference = ufm.analyze(features.astype(np.float64), labels, weight, bias, spectra=False)
    np.save(tmp_path / "f.npy", features)
    mapped = np.load(tmp_path / "f.npy", mmap_mode="r")
    for given in (features, mapped):
        out = ufm.analyze(given, labels, weight, bias, chunk_size=16, spectra=False)
        for name, value in reference.measured.items():
            # float32 -> float64 is exact, so only the summation order differs
            assert out.measured[name] == pytest.approx(value, rel=1e-12, abs=1e-15), name
    assert np.array_equal(np.load(tmp_path / "f.npy"), features)  # the file is read, never written


def test_input_arrays_are_not_modified():
    features, labels, weight, bias = _imbalanced()
    copies = [x.copy() for x in (features, labels, weight, bias)]
    ufm.analyze(features, labels, weight, bias, chunk_size=5, spectra=False)
    assert all(np.array_equal(x, y) for x, y in zip((features, labels, weight, bias), copies, strict=True))


# --------------------------------------------------------------------------- spectra


def test_lanczos_largest_eigenvalue_matches_exact(monkeypatch):
    features, labels, weight, bias = _imbalanced(K=3, d=4, counts=(4, 5, 3))
    exact = ufm.analyze(features, labels, weight, bias, spectra=True)
    monkeypatch.setattr(last_layer, "DENSE_ENTRIES", 0)
    monkeypatch.setattr(last_layer, "STRUCTURED_BYTES", 0)
    lanczos = ufm.analyze(features, labels, weight, bias, spectra=True)
    for block in ("W", "H"):
        assert exact.spectra[block]["method"] == "dense" and lanczos.spectra[block]["method"] == "lanczos"
        # eigsh tol 1e-8 on a well-separated top eigenvalue
        assert lanczos.spectra[block]["lambda_max"] == pytest.approx(exact.spectra[block]["lambda_max"], rel=1e-7)
        assert lanczos.spectra[block]["kappa"] is None and f"kappa_{block}" not in lanczos.measured
    assert "skipped" in ufm.analyze(features, labels, weight, bias, spectra=False).spectra


def test_a_block_whose_dense_path_does_not_fit_takes_the_structured_one(monkeypatch):
    """Where jax.hessian's products at once would not fit (here: free memory set between the structured and the
    dense path's needs), the block takes the structured path, with the dense path's eigenvalues: it was refused
    on memory and reported skipped (the W block at N = 5,000, K = 100, d = 16: 149 GiB for a 1,600-row block)."""
    from ufm import _memory

    features, labels, weight, bias = _imbalanced(K=3, d=4, counts=(4, 5, 3))
    exact = ufm.analyze(features, labels, weight, bias, spectra=True)
    N, d = features.shape
    dense_need = _memory.dense_hessian_bytes(d * 3, 3, N, d, batch=d * 3)
    assert last_layer.spectra_bytes(N, d, 3) < dense_need / 4
    monkeypatch.setattr(_memory, "free_bytes", lambda device=None: int(dense_need / 2))
    structured = ufm.analyze(features, labels, weight, bias, spectra=True)
    assert exact.spectra["W"]["method"] == "dense" and structured.spectra["W"]["method"] == "structured"
    # two float64 eigensolvers on the same block: the same top eigenvalue to rounding
    assert structured.spectra["W"]["lambda_max"] == pytest.approx(exact.spectra["W"]["lambda_max"], rel=1e-12)


# --------------------------------------------------------------------------- API contracts


@pytest.mark.parametrize(
    "change,name",
    [
        (lambda a: a.update(features=a["features"][:, :, None]), "features"),
        (lambda a: a.update(features=np.where(np.arange(16)[:, None] == 9, np.nan, a["features"])), "features"),
        (lambda a: a.update(labels=a["labels"][:-1]), "labels"),
        (lambda a: a.update(labels=a["labels"] + 0.5), "labels"),
        (lambda a: a.update(labels=a["labels"] + 1), "labels"),
        (lambda a: a.update(labels=np.minimum(a["labels"], 2)), "labels"),  # class 3 without samples
        (lambda a: a.update(weight=a["weight"][:, :-1]), "weight"),
        (lambda a: a.update(weight=a["weight"][:1]), "weight"),
        (lambda a: a.update(bias=a["bias"][:-1]), "bias"),
        (lambda a: a.update(bias=np.full(4, np.inf)), "bias"),
        (lambda a: a.update(lam_W=1e-3), "lam_W"),
        (lambda a: a.update(lam_W=-1.0, lam_H=1.0), "lam_W"),
        (lambda a: a.update(loss="ce", delta=0.1, lam_W=1.0, lam_H=1.0), "delta"),
        (lambda a: a.update(chunk_size=0), "chunk_size"),
        (lambda a: a.update(spectra="yes"), "spectra"),
        (lambda a: a.update(loss="hinge"), "loss"),
    ],
)
def test_bad_arguments_name_the_argument(change, name):
    features, labels, weight, bias = _imbalanced()
    kwargs = dict(features=features, labels=labels, weight=weight, bias=bias)
    change(kwargs)
    with pytest.raises(ValueError, match=name):
        ufm.analyze(**kwargs)


def test_callable_module_and_json_keys():
    import ufm.analyze as cli_module  # rebinds ufm.analyze to the (callable) CLI module

    features, labels, weight, bias = _imbalanced()
    out = ufm.analyze(features, labels, weight, bias, spectra=False)
    assert isinstance(out, ufm.Analysis) and ufm.analyze is cli_module
    record = out.to_json()
    assert {"measured", "predicted", "error"} <= set(record)
    assert {"nc1", "nc2", "nc3", "w_norm", "h_norm"} <= set(record["measured"])
    json.dumps(record)  # plain types only
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.K = 3  # frozen


# --------------------------------------------------------------------------- command line


@pytest.fixture()
def npz(tmp_path):
    features, labels, weight, bias = _imbalanced(K=4, d=6, counts=(4, 4, 4, 4))
    path = tmp_path / "layer.npz"
    np.savez(path, features=features, labels=labels, weight=weight, bias=bias)
    return path, (features, labels, weight, bias)


def test_cli_npz_and_npy_files_agree_with_library(npz, tmp_path, capsys):
    path, (features, labels, weight, bias) = npz
    out = tmp_path / "out.json"
    setup = ["--loss", "ls", "--delta", "0.1", "--lam-W", "1e-3", "--lam-H", "1e-3", "--lam-b", "1e-3"]
    assert main([str(path), "--json", str(out), "--quiet", "--spectra", "off", "--no-cache", *setup]) == 0
    record = json.loads(out.read_text())
    expected = ufm.analyze(
        features, labels, weight, bias, loss="ls", delta=0.1, lam_W=1e-3, lam_H=1e-3, lam_b=1e-3, spectra=False
    )
    assert record["measured"] == pytest.approx(expected.measured, rel=1e-15)
    assert record["predicted"] == pytest.approx(expected.predicted) and set(record["error"]) == set(expected.error)
    assert record["applies"] is True and "nc1" in capsys.readouterr().out
    for key, array in zip(("features", "labels", "weight", "bias"), (features, labels, weight, bias), strict=True):
        np.save(tmp_path / f"{key}.npy", array)
    again = tmp_path / "again.json"
    argv = [f"--{k}={tmp_path / f'{k}.npy'}" for k in ("features", "labels", "weight", "bias")]
    assert main([*argv, "--json", str(again), "--quiet", "--spectra", "off", "--no-cache", *setup]) == 0
    assert json.loads(again.read_text())["measured"] == record["measured"]
    # no clobber without --force, checked before computing
    assert main([str(path), "--json", str(out), "--quiet", "--no-cache"]) == 2
    assert "--force" in capsys.readouterr().err
    # --force replaces the file in place (no sibling name)
    assert main([str(path), "--json", str(out), "--quiet", "--spectra", "off", "--no-cache", "--force"]) == 0
    assert json.loads(out.read_text())["setup"] != record["setup"]
    assert sorted(p.name for p in tmp_path.glob("out*.json")) == ["out.json"]


@pytest.mark.parametrize(
    "edit,key",
    [
        (lambda a: a.pop("labels"), "labels"),
        (lambda a: a.pop("weight"), "weight"),
        (lambda a: a.update(weight=a["weight"][:, :5]), "weight"),
        (lambda a: a.update(features=a["features"][0]), "features"),
        (lambda a: a.update(labels=a["labels"] + 4), "labels"),
        (lambda a: a.update(labels=a["labels"] * 0.5), "labels"),
        (lambda a: a.update(features=np.where(a["features"] > 2, np.nan, a["features"])), "features"),
        (lambda a: a.update(bias=np.zeros(3)), "bias"),
    ],
)
def test_cli_bad_files_one_error_line_naming_the_key(npz, tmp_path, capsys, edit, key):
    _, (features, labels, weight, bias) = npz
    arrays = dict(features=features, labels=labels, weight=weight, bias=bias)
    edit(arrays)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    assert main([str(bad), "--quiet", "--no-cache", "--json", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m ufm.analyze: error: ") and key in err[0], err
    assert not (tmp_path / "x.json").exists()


def test_cli_unreadable_and_mixed_inputs(tmp_path, capsys, npz):
    path, _ = npz
    junk = tmp_path / "junk.npz"
    junk.write_text("not an archive")
    assert main([str(junk), "--quiet", "--no-cache"]) == 2
    assert main(["--features", str(junk), "--labels", str(junk), "--weight", str(junk), "--quiet", "--no-cache"]) == 2
    assert main([str(path), "--features", str(junk), "--quiet", "--no-cache"]) == 2
    assert main(["--quiet", "--no-cache"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and all(": error: " in line for line in lines)


def test_float32_scores_decide_near_ties_as_float64():
    # two classifier rows 1e-9 apart: float32 cannot tell them apart, the float64 recheck must
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 16))
    A = rng.normal(size=(5, 16))
    A[1] = A[0] + 1e-9 * rng.normal(size=16)
    c = np.array([0.0, 0.0, -50.0, -50.0, -50.0])
    expected = np.argmax(X @ A.T + c, axis=1)
    float32_only = np.argmax(X.astype(np.float32) @ A.astype(np.float32).T + c.astype(np.float32), axis=1)
    assert np.any(float32_only != expected)  # the case needs the recheck
    assert np.array_equal(last_layer._Scores(A, c).argmax(X), expected)


# --------------------------------------------------------------------------- imbalanced: numerical UFM prediction

SIZES = (6, 2, 4, 1)
SETUP = dict(lam_W=1e-2, lam_H=1e-3, lam_b=1e-2)


@pytest.fixture(scope="module")
def imbalanced_solutions():
    """Full-problem L-BFGS (all N columns of H, not the class-mean reduction analyze solves) on
    Problem(class_sizes=SIZES), CE and LS (one compiled program: the loss is traced). d = K = 4: analyze's
    numerical optimum is then the program of the imbalance experiment's quick run (K = d = 4)."""
    out = {}
    for loss, delta in (("ce", 0.0), ("ls", 0.1)):
        problem = ufm.Problem(K=4, d=4, class_sizes=SIZES, loss=loss, delta=delta, **SETUP)
        result = ufm.solve(problem, "lbfgs", history=False)
        assert result.converged
        out[loss] = (problem, result)
    return out


@pytest.mark.parametrize("loss", ["ce", "ls"])
def test_imbalanced_ufm_solution_matches_the_numerical_prediction(imbalanced_solutions, loss):
    """analyze on the UFM solution with unequal class sizes, in the network layout, against analyze's own
    numerical optimum (ufm.imbalance.solve_reduced from another start, on the K-column reduction).
    Both stop at gradient ratios 1e-10 / 1e-12 on a problem with O(1) curvature: measured 1.2e-9 at
    most (CE; LS 2.2e-10); asserted 1e-8."""
    problem, result = imbalanced_solutions[loss]
    W, H, b = (np.asarray(x) for x in (result.W, result.H, result.b))
    out = ufm.analyze(H.T, np.asarray(problem.labels()), W.T, b, loss=loss, delta=problem.delta, spectra=False, **SETUP)
    assert out.prediction_kind == last_layer.PREDICTION_NUMERICAL
    assert out.to_json()["prediction_kind"] == last_layer.PREDICTION_NUMERICAL
    assert not out.applies and any(
        r.startswith("class counts differ (1 to 6") and "numerical" in r for r in out.not_applicable
    )
    for name in ("w_norm", "h_norm", "a", "p_t", "p_n"):
        assert out.relative[name] and out.error[name] < 1e-8, (name, out.error[name])
    for name in ("nc1", "nc2", "nc3", "bias"):
        assert not out.relative[name] and out.error[name] < 1e-8, (name, out.error[name])
    # the prediction is not the balanced geometry: NC2/NC3 far from 0, and the closed form for
    # n = round(N/K) misses the norms by more than 1 %
    assert out.predicted["nc2"] > 0.1 and out.predicted["nc3"] > 0.1
    closed = predict(ufm.Problem(K=4, n=3, d=4, loss=loss, delta=problem.delta, **SETUP))
    assert abs(closed.w_norm - out.measured["w_norm"]) > 1e-2 * out.measured["w_norm"]
    from ufm.analyze import report_text

    assert "UFM prediction: numerical UFM optimum with the observed class sizes" in report_text(out)


def test_numerical_prediction_detects_a_wrong_setup(imbalanced_solutions):
    problem, result = imbalanced_solutions["ce"]
    W, H, b = (np.asarray(x) for x in (result.W, result.H, result.b))
    out = ufm.analyze(H.T, np.asarray(problem.labels()), W.T, b, loss="ce", spectra=False, **{**SETUP, "lam_H": 2e-3})
    assert out.prediction_kind == last_layer.PREDICTION_NUMERICAL
    assert out.error["w_norm"] > 1e-3 and out.error["h_norm"] > 1e-3


def test_numerical_prediction_is_skipped_with_a_reason(imbalanced_solutions, monkeypatch):
    problem, result = imbalanced_solutions["ce"]
    W, H, b = (np.asarray(x) for x in (result.W, result.H, result.b))
    labels = np.asarray(problem.labels())
    focal = ufm.analyze(H.T, labels, W.T, b, loss="focal", gamma=1.0, spectra=False, **SETUP)
    assert focal.prediction_kind == last_layer.PREDICTION_CLOSED_FORM
    assert any("numerical prediction skipped: loss 'focal'" in r for r in focal.not_applicable)
    monkeypatch.setattr(last_layer, "NUMERICAL_MAX_KD", 15)
    big = ufm.analyze(H.T, labels, W.T, b, loss="ce", spectra=False, **SETUP)
    assert big.prediction_kind == last_layer.PREDICTION_CLOSED_FORM and big.predicted["nc2"] == 0.0
    assert any("numerical prediction skipped: K d = 16 > NUMERICAL_MAX_KD = 15" in r for r in big.not_applicable)


# --------------------------------------------------------------------------- kappa over the predicted non-zeros

NEAR = dict(K=4, n=5, d=10, delta=0.1, lam_W=1e-2, lam_H=1e-3)  # d > K: extra near-zero W-block eigenvalues


def _near_minimizer(spread=1e-3, w_noise=1e-6, seed=0):
    """Theorem 4.1's minimizer, W perturbed by ``w_noise`` (relative) and within-class noise of relative size
    ``spread`` on H (zero mean per class, so the class means stay exact; NC1 ~ spread^2 ~ 1e-6 as on a
    network that collapsed to 1e-6): every direction of the d = 10 > K features carries a little spread."""
    K, n, d = NEAR["K"], NEAR["n"], NEAR["d"]
    W, H, b = theory.global_minimizer(K, n, d, delta=NEAR["delta"], lam_W=NEAR["lam_W"], lam_H=NEAR["lam_H"], seed=1)
    labels = np.repeat(np.arange(K), n)
    rng = np.random.default_rng(seed)
    E = rng.normal(size=H.shape)
    for k in range(K):
        E[:, labels == k] -= E[:, labels == k].mean(axis=1, keepdims=True)
    H = H + spread * np.linalg.norm(H, axis=0).mean() * E / np.sqrt(d)
    W = W * (1.0 + w_noise * rng.normal(size=W.shape))
    return H.T, labels, W.T, b


def test_kappa_is_over_the_eigenvalues_predicted_non_zero():
    K, n = NEAR["K"], NEAR["n"]
    features, labels, weight, bias = _near_minimizer()
    setup = {k: NEAR[k] for k in ("delta", "lam_W", "lam_H")}
    out = ufm.analyze(features, labels, weight, bias, loss="ls", spectra=True, **setup)
    K_p_t = K * theory.probabilities(K, n, delta=NEAR["delta"], lam_W=NEAR["lam_W"], lam_H=NEAR["lam_H"])[0]
    assert out.predicted["kappa_W"] == pytest.approx(K_p_t, rel=1e-12)
    W, H, Hm = (out.spectra[name] for name in ("W", "H", "H_class_means"))
    assert W["kept"] == (K - 1) ** 2 and H["kept"] == Hm["kept"] == n * K * (K - 1)  # theory.spectra's counts
    # the within-class spread perturbs the kept eigenvalues at second order: measured 3.4e-7 (W), 2.9e-6 (H)
    assert out.measured["kappa_W"] == pytest.approx(K_p_t, rel=1e-3)
    assert out.measured["kappa_H"] == Hm["kappa"] == pytest.approx(K_p_t, rel=1e-3)
    assert out.error["kappa_W"] < 1e-3 and out.error["kappa_H"] < 1e-3
    # the residue: eigenvalues predicted to be zero, ~spread^2 of the kept ones (measured 1.3e-6)
    assert 1e-8 < W["residue_ratio"] < 1e-4 and W["residue"] > 0
    # the old rule (every eigenvalue above 1e-8 lambda_max) on the same reported spectrum: ~1e7, not ~3.6
    values = np.array(W["values"])
    positive = values[values > 1e-8 * values.max()]
    assert positive.max() / positive.min() > 1e3 * K_p_t
    # at the features the per-sample probabilities spread (first order): shown, not compared
    assert "kappa_H_point" in out.measured and "kappa_H_point" not in out.error
    assert not H["compared"] and Hm["compared"] and W["compared"]
    assert abs(out.measured["kappa_H_point"] - K_p_t) > abs(out.measured["kappa_H"] - K_p_t)
    # without the setup there is no predicted count: the old rule, labelled
    bare = ufm.analyze(features, labels, weight, bias, loss="ls", delta=NEAR["delta"], spectra=True)
    assert "no predicted count" in bare.spectra["W"]["rule"] and "kept" not in bare.spectra["W"]
    assert bare.measured["kappa_W"] > 1e3 * K_p_t
    from ufm.analyze import report_text

    text = report_text(out)
    assert "H (at the class means)" in text and "H (at the features)" in text and "residue" in text


# --------------------------------------------------------------------------- held-out set


def _held_out_reference(train, test, weight, bias, delta):
    """The held-out quantities from their definitions (one array, no chunks), with jax's ufm.losses and
    scipy's entropy: independent of analyze's streaming numpy code."""
    import jax.numpy as jnp
    from scipy.special import entr

    from ufm import losses

    (X, y), (T, t) = train, test
    K = weight.shape[0]
    means = np.array([X[y == k].mean(axis=0) for k in range(K)])
    sigma_B = sum(np.outer(m - X.mean(axis=0), m - X.mean(axis=0)) for m in means) / K
    pinv = np.linalg.pinv(sigma_B, rcond=1e-10)
    Z = T @ weight.T + bias
    right = np.argmax(Z, axis=1) == t
    per_sample = np.asarray(losses.label_smoothing(jnp.asarray(Z.T), jnp.asarray(t), delta))
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    entropy = entr(P).sum(axis=1)

    def nc1(rows, centre=t):
        D = T[rows] - means[centre[rows]]
        return np.trace(D.T @ D / rows.sum() @ pinv) / K

    nearest = np.argmin(((T[:, None, :] - means[None]) ** 2).sum(axis=2), axis=1)
    out = {"accuracy": right.mean(), "nc1": nc1(np.ones_like(right)), "ncc_accuracy": np.mean(nearest == t)}
    out["loss"], out["entropy"] = per_sample.mean(), entropy.mean()
    for name, rows in (("correct", right), ("incorrect", ~right)):
        out[name] = {"count": int(rows.sum()), "nc1": nc1(rows), "loss": per_sample[rows].mean()}
        out[name]["nc1_predicted"] = nc1(rows, np.argmax(Z, axis=1))  # around the predicted class's mean
        out[name]["entropy"] = entropy[rows].mean()
    return out


def test_held_out_against_the_training_means_and_a_direct_formula():
    features, labels, weight, bias = _imbalanced(K=4, d=6, counts=(3, 7, 1, 5), scale=0.5)
    test, test_labels, _, _ = _imbalanced(K=4, d=6, counts=(5, 4, 6, 3), seed=9, scale=3.0)
    test = test + 1.5  # a shifted test set: the shift counts as spread around the training means
    expected = _held_out_reference((features, labels), (test, test_labels), weight, bias, 0.2)
    assert 0 < expected["incorrect"]["count"] < test.shape[0]  # both subgroups present
    for chunk in (None, 4):
        out = ufm.analyze(
            features,
            labels,
            weight,
            bias,
            loss="ls",
            delta=0.2,
            spectra=False,
            chunk_size=chunk,
            test_features=test,
            test_labels=test_labels,
        )
        held = out.held_out
        assert held["N"] == test.shape[0] and held["notes"] == []
        for name in ("accuracy", "nc1", "ncc_accuracy", "loss", "entropy"):
            assert held[name] == pytest.approx(expected[name], rel=1e-12), name
        for group in ("correct", "incorrect"):
            assert held[group]["count"] == expected[group]["count"]
            for name in ("nc1", "nc1_predicted", "loss", "entropy"):
                assert held[group][name] == pytest.approx(expected[group][name], rel=1e-12), (group, name)
    from ufm.analyze import report_text

    assert out.to_json()["held_out"] == held and "Held-out set (M = 18)" in report_text(out)
    json.dumps(out.to_json(), allow_nan=False)


def test_held_out_empty_subgroup_is_none_with_a_note():
    features, labels, weight, bias = _imbalanced()
    held = ufm.analyze(features, labels, weight, bias, spectra=False, test_features=features, test_labels=labels)
    held = held.held_out
    assert held["incorrect"] == {"count": 0, "nc1": None, "nc1_predicted": None, "loss": None, "entropy": None}
    assert held["accuracy"] == 1.0 and any("no incorrectly classified" in note for note in held["notes"])


@pytest.mark.parametrize(
    "loss,kwargs",
    [
        ("ce", {}),
        ("ls", {"delta": 0.3}),
        ("focal", {"gamma": 2.0}),
        ("focal", {"gamma": 0.0}),
        ("mse", {"mse_kappa": 3.0, "mse_beta": 2.0}),
    ],
)
def test_numpy_losses_equal_ufm_losses(loss, kwargs):
    import jax.numpy as jnp

    from ufm import losses

    rng = np.random.default_rng(1)
    Z, y = 5.0 * rng.normal(size=(30, 4)), rng.integers(0, 4, size=30)
    reference = {
        "ce": lambda z: losses.label_smoothing(z, jnp.asarray(y), 0.0),
        "ls": lambda z: losses.label_smoothing(z, jnp.asarray(y), kwargs.get("delta")),
        "focal": lambda z: losses.focal(z, jnp.asarray(y), kwargs.get("gamma")),
        "mse": lambda z: losses.rescaled_mse(z, jnp.asarray(y), kwargs.get("mse_kappa"), kwargs.get("mse_beta")),
    }[loss](jnp.asarray(Z.T))
    ours = losses.loss_spec(loss).rows(Z, y, **kwargs)  # the numpy twin ufm.analyze's held-out set uses
    # float64 on both sides, the same operations up to the log-softmax's implementation: 1e-12 relative
    np.testing.assert_allclose(ours, np.asarray(reference), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "change,name",
    [
        (dict(test_features=np.zeros((3, 6))), "test_labels"),
        (dict(test_features=np.zeros((3, 5)), test_labels=np.zeros(3, int)), "test_features"),
        (dict(test_features=np.zeros(6), test_labels=np.zeros(1, int)), "test_features"),
        (dict(test_features=np.zeros((3, 6)), test_labels=np.array([0, 4, 1])), "test_labels"),
        (dict(test_features=np.zeros((3, 6)), test_labels=np.zeros(2, int)), "test_labels"),
        (dict(test_features=np.full((3, 6), np.nan), test_labels=np.zeros(3, int)), "test_features"),
    ],
)
def test_bad_test_arrays_name_the_argument(change, name):
    features, labels, weight, bias = _imbalanced()
    with pytest.raises(ValueError, match=name):
        ufm.analyze(features, labels, weight, bias, spectra=False, **change)


# --------------------------------------------------------------------------- verdict


def test_verdict_at_near_and_away_from_the_minimizer():
    K, n, d, delta, lam_W, lam_H = 5, 3, 7, 0.2, 1e-3, 1e-2
    W, H, b = theory.global_minimizer(K, n, d, delta=delta, lam_W=lam_W, lam_H=lam_H, seed=1)
    labels = np.repeat(np.arange(K), n)
    setup = dict(loss="ls", delta=delta, lam_W=lam_W, lam_H=lam_H, spectra=False)
    at = ufm.analyze(H.T, labels, W.T, b, **setup).verdict()
    assert at["status"] == "at_minimizer" and at["worst_error"] <= 1e-6 and at["text"].startswith("at the minimizer")
    assert any("kappa_W, kappa_H predicted, not measured" in r for r in at["not_judged"])
    off = ufm.analyze(H.T, labels, 1.01 * W.T, b, **setup)
    verdict = off.verdict()
    assert verdict["status"] == "not_at_minimizer" and "w_norm" in verdict["beyond_rtol"]
    assert verdict["worst_error"] == max(off.error.values()) and verdict["worst"] in verdict["text"]
    assert off.verdict(rtol=0.5)["status"] == "at_minimizer"
    none = ufm.analyze(H.T, labels, W.T, b, spectra=False).verdict()
    assert none["status"] == "no_prediction" and "no training setup" in none["text"] and none["judged"] == []
    features, labels, weight, bias = _imbalanced(K=3, d=2, counts=(10, 2, 4))
    setup = dict(loss="focal", gamma=1.0, lam_W=1e-3, lam_H=1e-3, spectra=False)
    narrow = ufm.analyze(features, labels, weight, bias, **setup).verdict()
    assert narrow["status"] == "no_prediction" and "d = 2 < K = 3" in narrow["text"]


def test_cli_verdict_test_set_and_rtol(tmp_path, capsys):
    K, n, d, delta, lam_W, lam_H = 5, 3, 7, 0.2, 1e-3, 1e-2
    W, H, b = theory.global_minimizer(K, n, d, delta=delta, lam_W=lam_W, lam_H=lam_H, seed=1)
    labels = np.repeat(np.arange(K), n)
    np.savez(tmp_path / "l.npz", features=H.T, labels=labels, weight=1.01 * W.T, bias=b)
    np.savez(tmp_path / "t.npz", features=H.T[::2] + 0.1, labels=labels[::2])
    argv = [str(tmp_path / "l.npz"), "--quiet", "--no-cache", "--spectra", "off", "--loss", "ls", "--delta", "0.2"]
    argv += ["--lam-W", "1e-3", "--lam-H", "1e-2", "--test", str(tmp_path / "t.npz")]
    assert main([*argv, "--json", str(tmp_path / "o.json")]) == 0  # not at the minimizer: still exit 0
    out = capsys.readouterr().out
    expected = ufm.analyze(H.T, labels, 1.01 * W.T, b, loss="ls", delta=delta, lam_W=lam_W, lam_H=lam_H, spectra=False)
    worst = max(expected.error, key=expected.error.get)
    worst_text = f"worst error {expected.error[worst]:.2e} (relative) in {worst}"
    assert out.splitlines()[-1].startswith(f"VERDICT: not at the minimizer: {worst_text}; beyond rtol 1e-06: ")
    assert "hypotheses hold" not in out and "Held-out set (M = 8)" in out
    record = json.loads((tmp_path / "o.json").read_text())
    assert record["verdict"]["status"] == "not_at_minimizer" and record["verdict"]["rtol"] == 1e-6
    assert record["held_out"]["N"] == 8 and record["inputs"]["test"] == str(tmp_path / "t.npz")
    assert main([*argv, "--rtol", "0.05"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("VERDICT: at the minimizer within rtol 0.05")


# --------------------------------------------------------------------------- d < K: the numerical optimum

BELOW_K = dict(loss="ls", delta=0.1, lam_W=1e-2, lam_H=1e-3, lam_b=1e-2)


@pytest.fixture(scope="module")
def below_k():
    """The UFM optimum for K = 5, d = 3 (ufm.generalized, seed 7: a start none of analyze's restarts 0..3 uses),
    rotated, its classes relabelled, in the network layout with n = 4 samples per class."""
    K, d, n = 5, 3, 4
    lams = {key: BELOW_K[key] for key in ("lam_W", "lam_H", "lam_b")}
    pred = generalized.generalized_prediction(
        np.full(K, float(n)), d=d, loss="ls", delta=0.1, restarts=1, seed=7, certify=False, **lams
    )
    assert pred.converged
    rng = np.random.default_rng(5)
    Q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    order = rng.permutation(K)
    labels = np.repeat(np.arange(K), n)
    return (Q @ pred.Hbar).T[order][labels], labels, (Q @ pred.W).T[order], pred.b[order]


def test_d_below_k_is_judged_against_the_numerical_optimum(below_k):
    """At an equivalent minimizer (another start, rotated, relabelled): every judged row within rtol + spread
    (measured: worst 1.8e-12, the sorted biases); 1 % off in W: not at the minimizer. The GNC measurements
    are gnc_metrics'."""
    features, labels, weight, bias = below_k
    out = ufm.analyze(features, labels, weight, bias, **BELOW_K, spectra=False)
    assert out.prediction_kind == last_layer.PREDICTION_GENERALIZED and not out.applies
    assert any(r.startswith("d = 3 < K = 5: no simplex ETF") for r in out.not_applicable)
    info = out.generalized
    assert info["restarts"] == generalized.DEFAULT_RESTARTS and info["converged"] and info["certificate"]["gap"] > 0
    judged = {"w_norm", "h_norm", "a", "p_t", "p_n", "nc1", "bias", *last_layer.GNC_JUDGED}
    assert set(out.error) == judged and set(out.spread) == judged - {"nc1"}
    assert out.spread["a"] == info["spread"]["logit_norm"] and out.spread["bias"] == info["spread"]["b_sorted"]
    verdict = out.verdict()
    assert verdict["status"] == "at_minimizer" and verdict["worst_error"] < 1e-8, verdict
    assert "+ restart spread" in verdict["text"] and "no closed form exists for d < K" in verdict["text"]
    assert "best of 4 seeded restarts" in verdict["text"] and "GNC metrics" in verdict["text"]
    # the network's own GNC measurements: ufm.generalized.gnc_metrics of the same arrays
    means = np.stack([features[labels == k].mean(axis=0) for k in range(5)])
    expected = generalized.gnc_metrics(weight.T, means.T, bias, np.bincount(labels))
    for name in last_layer.GNC_MEASURED:
        assert out.measured[name] == pytest.approx(float(expected[name]), rel=1e-12, abs=1e-14), name
    for name in ("w_norm", "h_norm"):
        assert out.measured[name] == pytest.approx(float(expected[name]), rel=1e-12), name
    off = ufm.analyze(features, labels, 1.01 * weight, bias, **BELOW_K, spectra=False, restarts=2)
    worse = off.verdict()
    assert off.generalized["restarts"] == 2 and worse["status"] == "not_at_minimizer"
    assert {"w_norm", "a", "logit_norm"} <= set(worse["beyond_rtol"]) and worse["worst_error"] > 1e-3
    assert off.error["margin"] < 1e-8  # a scaled classifier has the same directions
    # without a setup: measured, nothing predicted; restarts checked by name
    plain = ufm.analyze(features, labels, weight, bias, spectra=False)
    assert plain.measured["margin"] == out.measured["margin"] and plain.predicted == {} and plain.generalized == {}
    for bad in (0, 1.5, generalized.MAX_RESTARTS + 1, "2"):
        with pytest.raises(ValueError, match="restarts must be an integer"):
            ufm.analyze(features, labels, weight, bias, restarts=bad)


def test_d_below_k_skips_with_a_reason(below_k, monkeypatch):
    """Focal loss, K d above NUMERICAL_MAX_KD, K above GNC_MAX_K: skipped with the reason, not judged."""
    features, labels, weight, bias = below_k
    focal = ufm.analyze(features, labels, weight, bias, loss="focal", gamma=1.0, lam_W=1e-2, lam_H=1e-3, spectra=False)
    assert focal.verdict()["status"] == "no_prediction" and "loss 'focal'" in focal.generalized["skipped"]
    monkeypatch.setattr(last_layer, "NUMERICAL_MAX_KD", 14)
    monkeypatch.setattr(last_layer, "GNC_MAX_K", 4)
    big = ufm.analyze(features, labels, weight, bias, **BELOW_K, spectra=False)
    assert "K d = 15 > NUMERICAL_MAX_KD = 14" in big.generalized["skipped"] and "margin" not in big.measured
    assert "GNC_MAX_K = 4" in big.generalized["gnc_skipped"] and big.verdict()["status"] == "no_prediction"
    from ufm.analyze import report_text

    text = report_text(big)
    assert "d < K prediction: skipped (K d = 15" in text and "GNC metrics (d < K): not measured (K = 5" in text


def test_cli_d_below_k_verdict_and_restarts(below_k, tmp_path, capsys):
    features, labels, weight, bias = below_k
    np.savez(tmp_path / "l.npz", features=features, labels=labels, weight=weight, bias=bias)
    argv = [str(tmp_path / "l.npz"), "--quiet", "--no-cache", "--spectra", "off", "--loss", "ls", "--delta", "0.1"]
    argv += ["--lam-W", "1e-2", "--lam-H", "1e-3", "--lam-b", "1e-2", "--restarts", "2"]
    assert main([*argv, "--json", str(tmp_path / "o.json")]) == 0
    out = capsys.readouterr().out
    assert "d < K prediction (ufm.generalized): best of 2 seeded restarts (seeds 0..1)" in out
    assert out.splitlines()[-1].startswith("VERDICT: at the minimizer within rtol 1e-06 + restart spread: ")
    assert out.splitlines()[-1].endswith("no closed form exists for d < K]")
    record = json.loads((tmp_path / "o.json").read_text())
    assert record["verdict"]["status"] == "at_minimizer" and record["generalized"]["restarts"] == 2
    assert record["prediction_kind"] == last_layer.PREDICTION_GENERALIZED and "margin" in record["spread"]
    weight = weight.copy()
    weight[0] *= 1.01
    np.savez(tmp_path / "l.npz", features=features, labels=labels, weight=weight, bias=bias)
    assert main(argv) == 0  # not at the minimizer: still exit 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("VERDICT: not at the minimizer: worst error ")
