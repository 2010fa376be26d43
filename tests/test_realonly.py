"""Real-only baselines on the flow's features: kNN (cosine) beside the Gaussian, with the
flow's threshold rule and conformal columns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipflow.errors import ClipflowError
from clipflow.paper.baselines import KNN, baseline_options


def test_knn_equals_a_brute_force_mean_of_the_k_nearest_cosine_distances():
    gen = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(50, 8, generator=gen), torch.randn(7, 8, generator=gen)
    got = KNN(k=3, chunk=2).fit(bank).score(queries)  # chunks smaller than the queries
    sims = np.array([[float(torch.cosine_similarity(q, b, dim=0)) for b in bank] for q in queries])
    want = 1.0 - np.sort(sims, axis=1)[:, -3:].mean(axis=1)
    assert got.shape == (7,)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_knn_scores_a_training_feature_near_zero_and_an_outlier_high():
    gen = torch.Generator().manual_seed(1)
    natural = torch.randn(40, 16, generator=gen) + 4.0  # a cluster away from the origin
    model = KNN(k=1).fit(natural)
    inside, outside = model.score(natural[:1]), model.score(-natural[:1])
    assert inside[0] == pytest.approx(0.0, abs=1e-6) and outside[0] > 1.0
    assert model.n_params == 40 * 16


def test_knn_refuses_a_bad_k_in_one_line():
    with pytest.raises(ValueError, match="at least k=10"):
        KNN(k=10).fit(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="integer >= 1"):
        KNN(k=0).fit(torch.zeros(3, 4))
    with pytest.raises(RuntimeError, match="fit the kNN"):
        KNN().score(np.zeros((1, 4)))


def test_baseline_options_take_defaults_and_refuse_unknown_keys():
    assert baseline_options("knn", None) == {"k": 5}
    assert baseline_options("knn", {"k": 2}) == {"k": 2}
    with pytest.raises(ClipflowError, match=r"baseline_settings.knn: unknown key\(s\) \['kk'\]"):
        baseline_options("knn", {"kk": 2})


def test_realonly_experiment_arms_and_baselines():
    """The flow with freq-mask, recon and both proxies; kNN, Gaussian, reconstruction distance.
    backbone=tiny swaps SD's VAE for the random tiny autoencoder (arms and baseline alike)."""
    from clipflow.paper.experiment_configs import load_experiment, named_experiments
    from clipflow.paper.experiments import Runner
    from clipflow.paper.spec import RunOptions

    spec = load_experiment("realonly")
    assert "realonly" in named_experiments() and spec.tables == ["realonly"]
    assert spec.baselines == ["knn", "mahalanobis", "recon_distance"]
    real = {a.name: Runner(RunOptions()).settings(spec, a, 0) for a in spec.arms}
    tiny = {
        a.name: Runner(RunOptions(overrides=["backbone=tiny"])).settings(spec, a, 0)
        for a in spec.arms
    }
    assert {k: v.proxy.name for k, v in tiny.items()} == {
        "freq_mask": "freq_mask",
        "recon": "recon",
        "both": "recon",
    }
    assert real["recon"].proxy.autoencoder == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert tiny["recon"].proxy.autoencoder == tiny["both"].proxy.autoencoder == "tiny"
    assert (tiny["both"].proxy.freq_share, tiny["recon"].proxy.freq_share) == (0.5, 0.0)
    assert all(v.train.mode == "N+P" for v in tiny.values())
    assert spec.tiny_baseline_settings["recon_distance"] == {"autoencoder": "tiny"}


def test_real_only_baselines_carry_threshold_and_calibration_reals(tmp_path, mini_bench):
    """kNN and the reconstruction distance (tiny autoencoder) fitted by the experiment runner:
    a score per test image, a threshold from the flow's rule and the validation naturals'
    scores, which evaluate_sets turns into the same conformal columns as the flow's."""
    from clipflow.eval.metrics import OURS_COLUMNS
    from clipflow.paper.experiment_configs import compose_settings
    from clipflow.paper.experiments import Runner
    from clipflow.paper.spec import RunOptions
    from clipflow.runs.evaluate import evaluate_sets

    s = compose_settings(
        [
            "backbone=tiny",
            "device=cpu",
            f"data.train_root={mini_bench / 'train'}",
            f"data.test_root={mini_bench / 'test'}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.num_workers=0",
            "data.val_fraction=0.3",
        ]
    )
    runner = Runner(RunOptions(overrides=["backbone=tiny"]))
    knn = runner.baseline("knn", s, {"k": 2})
    recon = runner.baseline("recon_distance", s, {"autoencoder": "tiny"})
    assert runner.baseline("knn", s, {"k": 2}) is knn  # fitted once per settings
    for fitted in (knn, recon):
        assert fitted.cal_scores is not None and len(fitted.cal_scores) == 6  # 3 per class
        assert np.isfinite(fitted.threshold)
        assert set(fitted.score_of) == set(fitted.test.paths)
        rows, _ = evaluate_sets(
            fitted.test.sets, fitted.score_of, fitted.threshold, fitted.cal_scores
        )
        assert rows and all(set(OURS_COLUMNS) <= set(r) for r in rows)
    assert all(v <= 0 for v in recon.score_of.values())  # minus a distance
    assert len(list((tmp_path / "cache").glob("recon1-*/*.png"))) > len(recon.test.paths)
