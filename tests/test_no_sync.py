"""The fast path's third pass (#25): no per-batch host/device sync, decode chosen by a measured
rule, scoring under the CPU thread policy, compile / CUDA-graph status recorded.

The CPU tests pin what a CPU can see (constants built once, the rule, the threads, the packing,
the status strings); the GPU-marked ones run the extraction loop under
``torch.cuda.set_sync_debug_mode`` where a GPU exists.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipflow.backbones import preprocess
from clipflow.backbones.backbone import compile_status, load_backbone
from clipflow.backbones.config import BackboneConfig
from clipflow.backbones.preprocess import build_transform, norm_constants
from clipflow.data.synthetic import natural_image
from clipflow.features import decode, extract
from clipflow.features.batching import worker_parts
from clipflow.features.decode import PackedPayloads, PayloadGroup, read_payload
from clipflow.features.extract import extract_features
from clipflow.features.loader import BY_SIZE, Loader, choose_decoder, nvjpeg_rate, pil_rate
from clipflow.flow.config import FlowConfig, TrainConfig
from clipflow.flow.fit import fit
from clipflow.flow.model import CLIPFlow, score_features
from clipflow.flow.step import StepRunner
from clipflow.transforms.config import ProxyConfig
from clipflow.transforms.proxy import build_proxy, frequency_band_mask
from clipflow.transforms.variant import IDENTITY, Variant

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _tiny():
    return load_backbone(BackboneConfig(name="tiny", pretrained=None))


def _jpegs(folder: Path, n: int, size: int = 64) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"{i:02d}.jpg"
        Image.fromarray(natural_image(rng, size)).save(path, quality=90)
        paths.append(path)
    return paths


# ---------------------------------------------------------------- normalisation constants
def test_normalisation_constants_are_built_once_per_device(monkeypatch):
    norm_constants.cache_clear()
    made = []
    real = torch.tensor
    monkeypatch.setattr(preprocess.torch, "tensor", lambda *a, **k: made.append(1) or real(*a, **k))
    tf = build_transform(_tiny())
    x = torch.randint(0, 256, (4, 3, tf.size, tf.size), dtype=torch.uint8)
    first = [tf.normalize(x) for _ in range(5)]
    assert len(made) == 2  # mean and std, once: not two host->device copies per batch
    assert norm_constants.cache_info().misses == 1 and norm_constants.cache_info().hits == 4
    mean, std = torch.tensor(tf.mean).view(3, 1, 1), torch.tensor(tf.std).view(3, 1, 1)
    assert torch.equal(first[-1], (x.float() / 255.0 - mean) / std)  # same values as before


def test_constants_made_in_inference_mode_serve_autograd_callers():
    norm_constants.cache_clear()
    tf = build_transform(_tiny())
    x = torch.randint(0, 256, (1, 3, tf.size, tf.size), dtype=torch.uint8)
    with torch.inference_mode():
        tf.normalize(x)
    y = tf.normalize(x).requires_grad_()
    (y * 2).sum().backward()  # an inference tensor here would refuse autograd
    assert not norm_constants(tf.mean, tf.std, torch.device("cpu"))[0].is_inference()


# ---------------------------------------------------------------- decode rule
def test_decode_rule_follows_the_measured_figures():
    # the H200 figures it is built from: 16 PIL workers beat nvJPEG at 256 px, not at 1024 px
    assert abs(pil_rate(256 * 256, 16) - 1493) < 15 and abs(pil_rate(1024**2, 16) - 450) < 5
    assert abs(nvjpeg_rate(256 * 256) - 1132) < 5 and abs(nvjpeg_rate(1024**2) - 880) < 5
    assert choose_decoder(256 * 256, 1.0, 16, cuda=True) == "pil"
    assert choose_decoder(1024 * 1024, 1.0, 16, cuda=True) == "nvjpeg"
    assert choose_decoder(256 * 256, 1.0, 4, cuda=True) == "nvjpeg"  # few CPUs
    assert choose_decoder(1024 * 1024, 1.0, 16, cuda=False) == "pil"  # no GPU
    assert choose_decoder(1024 * 1024, 0.2, 16, cuda=True) == "pil"  # mostly PNGs
    assert choose_decoder(None, 0.0, 16, cuda=True) == "pil"  # nothing readable


def test_by_size_reads_headers_and_resolves_per_extraction(tmp_path, caplog):
    paths = [str(p) for p in _jpegs(tmp_path, 3, size=96)]
    loader = Loader(decode=BY_SIZE, num_workers=2)
    assert loader.for_files(paths, "cpu").decode == "pil"
    with caplog.at_level("INFO", logger="clipflow.features.loader"):
        chosen = loader.for_files(paths, "cuda:0")  # the rule only; nothing runs on the device
    assert chosen.decode == "nvjpeg" and chosen.num_workers == 2
    assert "median 9,216 px" in caplog.text and "100% JPEG" in caplog.text
    assert Loader(decode="pil").for_files(paths, "cuda:0").decode == "pil"  # explicit: kept
    bb = _tiny()  # and a by_size loader extracts (on CPU: the PIL path)
    fs = extract_features(bb, paths, build_transform(bb), loader=Loader(decode=BY_SIZE))
    assert fs.paths == paths


# ---------------------------------------------------------------- nvJPEG path, host side
def test_jpeg_payloads_are_read_once_and_packed_into_one_buffer(tmp_path, monkeypatch):
    paths = [str(p) for p in _jpegs(tmp_path, 3)]
    png = tmp_path / "x.png"
    Image.fromarray(natural_image(np.random.default_rng(1), 40)).save(png)
    opened = []
    monkeypatch.setattr(decode, "open", lambda p, m: opened.append(p) or open(p, m), raising=False)
    payloads = [read_payload(p) for p in paths] + [read_payload(str(png))]
    assert opened == paths  # each JPEG opened once by name (its header is read from the bytes)
    packed = PackedPayloads.pack(payloads)
    assert packed.blob.dim() == 1 and len(packed.blob) == sum(len(d) for _, d in payloads[:3])
    for (kind, data), (kind2, data2) in zip(payloads, packed.unpack()):
        assert kind == kind2 and torch.equal(data, data2)
    assert packed.unpack()[0][1].untyped_storage().data_ptr() == packed.blob.data_ptr()
    merged = PayloadGroup([PackedPayloads.pack(payloads[:2]), PackedPayloads.pack(payloads[2:])])
    assert len(merged) == 4
    for (kind, data), (kind2, data2) in zip(payloads, merged.unpack()):
        assert kind == kind2 and torch.equal(data, data2)


def test_device_stage_runs_off_the_main_thread_and_matches_pil(tmp_path, monkeypatch):
    paths = _jpegs(tmp_path, 10)
    seen = []
    real = extract._device_stage
    monkeypatch.setattr(
        extract,
        "_device_stage",
        lambda *a: seen.append(threading.current_thread().name) or real(*a),
    )
    bb = _tiny()
    tf = build_transform(bb)
    proxy = Variant("fm", build_proxy(ProxyConfig(), "N+P"))
    dev = extract_features(bb, paths, tf, [IDENTITY, proxy], loader=Loader(4, decode="nvjpeg"))
    pil = extract_features(bb, paths, tf, [IDENTITY, proxy], loader=Loader(4, decode="pil"))
    assert len(seen) == 3 and all(name.startswith("clipflow-device-stage") for name in seen)
    assert dev.paths == pil.paths
    cos = torch.nn.functional.cosine_similarity(dev.features, pil.features, dim=-1)
    assert cos.min() >= 0.999


# ---------------------------------------------------------------- worker tasks
def test_a_batch_is_split_over_workers_in_pieces_that_divide_it():
    assert worker_parts(256, 15) == 8 and worker_parts(256, 0) == 1 and worker_parts(64, 1) == 1
    assert worker_parts(64, 3) == 2  # 3 does not divide 64
    assert worker_parts(40, 16) == 2  # pieces of at least 16 images
    assert worker_parts(100, 16) == 5


@pytest.mark.parametrize("decoder", ["pil", "nvjpeg"])
def test_regrouped_worker_pieces_give_the_same_batches(tmp_path, decoder):
    paths = [str(p) for p in _jpegs(tmp_path, 37)]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    paths.insert(5, str(broken))
    bb = _tiny()
    tf = build_transform(bb)
    batches = []
    for workers in (0, 2):  # 2 workers: batches of 32 from pieces of 16
        loader = Loader(batch_size=32, num_workers=workers, decode=decoder)
        batches.append(list(extract.iter_feature_batches(bb, paths, tf, loader=loader)))
    sizes = [[len(idx) + len(bad) for idx, _, bad in run] for run in batches]
    assert sizes[0] == sizes[1] == [32, 6]  # backbone batches of 32, whatever the pieces
    for (idx0, f0, bad0), (idx2, f2, bad2) in zip(*batches):
        assert idx0 == idx2 and bad0 == bad2 and torch.allclose(f0, f2, atol=1e-6)
    assert [i for i, _ in batches[1][0][2]] == [5]  # the broken file, reported in its batch
    assert sum(len(b[0]) for b in batches[1]) == 37


# ---------------------------------------------------------------- scoring threads
def test_scoring_follows_the_cpu_thread_policy_and_restores_the_callers_count(monkeypatch):
    model = CLIPFlow(16, FlowConfig(dr_dim=8, n_blocks=2))
    seen = []
    real = model.score
    monkeypatch.setattr(model, "score", lambda x: seen.append(torch.get_num_threads()) or real(x))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        feats = torch.randn(50, 16)
        policy = score_features(model, feats, batch_size=20)
        assert seen == [1, 1, 1] and torch.get_num_threads() == 2
        seen.clear()
        same = score_features(model, feats, batch_size=20, threads=None)
        assert seen == [2, 2, 2] and torch.equal(policy, same)
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- compile / capture status
def test_fit_reports_what_the_steps_ran_as():
    status: dict = {}
    model = CLIPFlow(16, FlowConfig(dr_dim=8, n_blocks=2))
    nat = torch.randn(1, 40, 16)
    fit(model, nat, nat + 1, TrainConfig(mode="N+P", epochs=1, batch_size=16), status=status)
    assert status == {"cuda_graph": "off (cpu)"}  # asked for (the default), no CUDA here
    off = StepRunner(lambda idx: {}, 4, "cpu", cuda_graph=False)
    assert off.status == "off"
    off.fallback = "operation not permitted when stream is capturing"
    assert off.status.startswith("failed: operation not permitted")


def test_compile_status_of_each_kind_of_backbone():
    assert compile_status(_tiny()) == "off"
    assert compile_status(object()) == "off"  # your own extractor: never compiled by clipflow


def test_training_run_records_speed_in_the_checkpoint(tmp_path, caplog):
    from clipflow.checkpoints.checkpoint import load_checkpoint
    from clipflow.data.synthetic import write_images
    from clipflow.runs.train import run_train
    from clipflow.settings.config import train_settings

    for cls in ("a", "b"):
        write_images(tmp_path / "train" / cls, 6, np.random.default_rng(len(cls)), size=48)
    s = train_settings(
        {
            "device": "cpu",
            "backbone": {"name": "tiny", "pretrained": None},
            "data": {"train_root": str(tmp_path / "train"), "num_workers": 0, "cache": False},
            "train": {"epochs": 1, "batch_size": 4},
        }
    )
    with caplog.at_level("INFO", logger="clipflow.runs.train"):
        ckpt = run_train(s, tmp_path / "run")
    meta = load_checkpoint(ckpt).meta
    assert meta["speed"] == {"compile": "off", "cuda_graph": "off (cpu)"}
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("speed:")]
    assert lines[0].startswith("speed: compile=off cuda_graph=off (asked")
    assert lines[-1] == "speed: compile=off cuda_graph=off (cpu)"


# ---------------------------------------------------------------- on a GPU
def _syncs_during(fn) -> list[str]:
    """Where (file:line) each synchronising CUDA call inside ``fn`` came from."""
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return [f"{w.filename}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)]


@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize("decoder", ["pil", "nvjpeg"])
def test_extraction_loop_makes_no_sync_per_batch(tmp_path, decoder):
    paths = _jpegs(tmp_path, 72)
    bb = _tiny().to("cuda")
    tf = build_transform(bb)
    proxy = Variant("fm", build_proxy(ProxyConfig(), "N+P"))  # masks drawn on the CPU

    def run():
        # 2 workers, batches of 32 from pieces of 16: the regrouping's device copies included
        loader = Loader(batch_size=32, num_workers=2, decode=decoder)
        return extract_features(bb, paths, tf, [IDENTITY, proxy], "cuda", loader)

    run()  # warm-up: constants, cuBLAS handles, nvJPEG handle
    done = []
    where = _syncs_during(lambda: done.append(run()))
    assert len(done[0].paths) == 72
    # three batches; the intended wait is an event (not counted): any counted sync is a bug
    assert where == [], f"synchronising calls during extraction ({decoder}): {where}"


@pytest.mark.gpu
@CUDA
def test_masks_drawn_for_a_gpu_are_the_cpu_masks_byte_for_byte():
    for band in ("low", "mid", "high", "low+high"):
        cpu = frequency_band_mask(32, 48, band, 0.3, 3, torch.Generator().manual_seed(5))
        gpu = frequency_band_mask(32, 48, band, 0.3, 3, torch.Generator().manual_seed(5), "cuda")
        assert gpu.is_cuda and torch.equal(gpu.cpu(), cpu)
