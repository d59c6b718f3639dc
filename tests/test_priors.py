"""Tests of the priors: the EM and BIC choice (celeste.gmm), the fit and its CLI (celeste.fitpriors),
the data model's JSON round trip and the shipped file (celeste.priors)."""
import json
from pathlib import Path

import numpy as np
import pytest

from celeste.errors import DataError, NumericalError
from celeste.fitpriors import fit_priors, main
from celeste.gmm import fit_gmm, gmm_log_density, select_k_bic
from celeste.priors import Priors, load_priors, priors_from_dict, save_priors

DATA = Path(__file__).parent / "data"
CATALOG = DATA / "stripe82_coadd_94_1_12.fits"


def _two_blobs(n=1500, seed=1):
    rng = np.random.default_rng(seed)
    w = np.array([0.7, 0.3])
    mu = np.array([[0.0, 0.0, 0.0, 0.0], [3.0, -2.0, 1.0, 2.5]])
    a = rng.normal(size=(4, 4)) * 0.3
    cov0 = a @ a.T + 0.2 * np.eye(4)
    cov1 = np.diag([0.5, 0.1, 0.3, 0.2])
    cov1[0, 1] = cov1[1, 0] = 0.1
    covs = np.array([cov0, cov1])
    lab = rng.random(n) < w[1]
    x = np.empty((n, 4))
    x[~lab] = rng.multivariate_normal(mu[0], cov0, size=(~lab).sum())
    x[lab] = rng.multivariate_normal(mu[1], cov1, size=lab.sum())
    return x, w, mu, covs


@pytest.fixture(scope="module")
def fitted():
    return fit_priors(CATALOG, command="test")


def test_em_recovers_two_component_mixture():
    x, w, mu, covs = _two_blobs()
    wf, mf, cf, ll = fit_gmm(x, 2, seed=0)
    # components are sorted by decreasing weight, matching the truth's order
    n = len(x)
    assert np.allclose(wf, w, atol=3 * np.sqrt(0.21 / n) + 0.01)
    assert np.allclose(mf, mu, atol=0.1)
    assert np.allclose(cf, covs, atol=0.08)
    # the fit beats the truth in likelihood (it is the MLE) but not by much
    ll_true = np.log(np.exp(gmm_log_density(x, w, mu, covs)).sum(axis=1)).sum()
    assert ll >= ll_true - 1e-6
    assert ll - ll_true < 20.0


def test_em_is_deterministic():
    x = _two_blobs(n=400)[0]
    a = fit_gmm(x, 3, seed=5)
    b = fit_gmm(x, 3, seed=5)
    for u, v in zip(a, b):
        assert np.array_equal(u, v)


def test_bic_picks_two_components():
    x = _two_blobs(n=800, seed=3)[0]
    k, bics = select_k_bic(x, k_max=4, seed=0)
    assert k == 2
    assert bics[1] < bics[0] - 100  # one Gaussian is clearly worse


def test_gmm_log_density_matches_scipy():
    from scipy.stats import multivariate_normal

    x, w, mu, covs = _two_blobs(n=10)
    got = gmm_log_density(x, w, mu, covs)
    for j in range(2):
        want = np.log(w[j]) + multivariate_normal(mu[j], covs[j]).logpdf(x)
        assert np.allclose(got[:, j], want, rtol=1e-12, atol=1e-12)


def test_fitted_priors_plausible(fitted):
    p = fitted
    assert 0.0 < p.prob_star < 1.0
    assert p.colour_weight.shape[0] == 2
    assert np.allclose(p.colour_weight.sum(axis=1), 1.0)
    for t in range(2):
        for k in range(p.n_components):
            ev = np.linalg.eigvalsh(p.colour_cov[t, k])
            assert ev.min() > 0
    # r-band flux of a typical coadd object: between 16 and 23 mag
    assert np.all((p.r_mean > np.log(10 ** ((22.5 - 23) / 2.5))) & (p.r_mean < np.log(10 ** ((22.5 - 16) / 2.5))))
    # median galaxy radius near 0.5 arcsec (the catalog's devrad/exprad medians)
    assert 0.3 < np.exp(p.shape_mean[2]) < 2.0
    prov = p.provenance
    assert prov["source_file"] == CATALOG.name and len(prov["source_sha256"]) == 64
    assert prov["n_stars"] + prov["n_galaxies"] == prov["n_objects_used"] <= 901


def test_json_round_trip(tmp_path, fitted):
    path = tmp_path / "p.json"
    save_priors(fitted, path)
    back = load_priors(path)
    for k, v in fitted.as_arrays().items():
        assert np.array_equal(back.as_arrays()[k], v), k
    assert back.provenance == json.loads(json.dumps(fitted.provenance))
    assert back.path == str(path)


def test_as_arrays_dtypes(fitted):
    arr = fitted.as_arrays()
    for k, v in arr.items():
        assert v.dtype == np.float64 and v.flags.c_contiguous, k
    eye = np.einsum("tkij,tkjl->tkil", arr["colour_prec"], arr["colour_cov"])
    assert np.allclose(eye, np.eye(4), atol=1e-8)


def test_shipped_priors_match_refit(fitted):
    shipped = load_priors()
    assert shipped.provenance["source_sha256"] == fitted.provenance["source_sha256"]
    a, b = shipped.as_arrays(), fitted.as_arrays()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape, k
        assert np.allclose(a[k], b[k], rtol=1e-9, atol=1e-12), k


@pytest.mark.parametrize(
    "mutate, msg",
    [
        (lambda d: d.pop("r_mean"), "r_mean"),
        (lambda d: d.__setitem__("prob_star", 1.5), "prob_star"),
        (lambda d: d.__setitem__("r_var", [1.0, -1.0]), "positive"),
        (lambda d: d["colour_cov"][0][0][0].__setitem__(0, -5.0), "positive definite"),
        (lambda d: d["colour_weight"][1].__setitem__(0, 5.0), "sum to 1"),
        (lambda d: d.__setitem__("colour_mean", [[0.0]]), "colour"),
    ],
)
def test_bad_priors_raise_data_error_naming_file(tmp_path, fitted, mutate, msg):
    d = fitted.to_dict()
    d = json.loads(json.dumps(d))
    mutate(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(DataError, match=msg) as e:
        load_priors(path)
    assert str(path) in str(e.value)


def test_unreadable_priors(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{not json")
    with pytest.raises(DataError, match="x.json"):
        load_priors(path)
    with pytest.raises(DataError, match="missing.json"):
        load_priors(tmp_path / "missing.json")


def test_cli_writes_and_refuses_overwrite(tmp_path, capsys):
    out = tmp_path / "pri.json"
    assert main(["--catalog", str(CATALOG), "-o", str(out), "--k-max", "2", "--n-init", "1"]) == 0
    p = load_priors(out)
    assert p.n_components <= 2
    assert "celeste-fit-priors" in p.provenance["command"]
    assert main(["--catalog", str(CATALOG), "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["--catalog", str(tmp_path / "nope.fits"), "-o", str(tmp_path / "q.json")]) == 2


def test_priors_from_dict_in_memory(fitted):
    p = priors_from_dict(fitted.to_dict())
    assert isinstance(p, Priors) and p.path == ""


def test_em_numerical_failure_is_a_numerical_error(monkeypatch):
    """A covariance that stops being positive definite ends the fit with NumericalError, not LinAlgError."""
    import celeste.gmm as gmm

    def broken(*args):
        raise np.linalg.LinAlgError("Matrix is not positive definite")

    monkeypatch.setattr(gmm, "gmm_log_density", broken)
    with pytest.raises(NumericalError, match="K=2"):
        fit_gmm(_two_blobs(200)[0], 2)
