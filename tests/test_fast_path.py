"""Fast-path options change speed, not results: precision, device-side decoding, compile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from fixtures_images import make_hostile_files
from PIL import Image
from sklearn.metrics import average_precision_score

from clipflow.backbones import preprocess
from clipflow.backbones.backbone import load_backbone, run_padded
from clipflow.backbones.config import BackboneConfig
from clipflow.backbones.preprocess import build_transform
from clipflow.data.synthetic import fake_image, natural_image
from clipflow.errors import BackboneError
from clipflow.features.decode import decode_on_device, read_payload
from clipflow.features.extract import extract_features
from clipflow.features.loader import Loader


def _tiny(**kw):
    return load_backbone(BackboneConfig(name="tiny", pretrained=None, **kw))


@pytest.fixture(scope="module")
def jpeg_set(tmp_path_factory) -> tuple[list[Path], np.ndarray]:
    root = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for i in range(24):
        fake = i % 2
        arr = fake_image(rng, 64) if fake else natural_image(rng, 64)
        path = root / f"{i:02d}.jpg"
        Image.fromarray(arr).save(path, quality=92)
        paths.append(path)
        labels.append(fake)
    return paths, np.array(labels)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def test_bf16_features_match_fp32(jpeg_set):
    paths, labels = jpeg_set
    fp32, bf16 = _tiny(), _tiny(precision="bf16")
    a = extract_features(fp32, paths, build_transform(fp32)).features[0]
    b = extract_features(bf16, paths, build_transform(bf16)).features[0]
    assert _cosine(a, b).min() >= 0.999
    # A linear read-out fitted on the fp32 features stands in for a detector: its AP on the
    # bf16 features must barely move.
    w = a[labels == 1].mean(0) - a[labels == 0].mean(0)
    ap = [100 * average_precision_score(labels, (f @ w).numpy()) for f in (a, b)]
    assert abs(ap[0] - ap[1]) < 0.1


def test_autocast_and_tf32_match_fp32(jpeg_set):
    paths, _ = jpeg_set
    ref = extract_features(_tiny(), paths[:6], build_transform(_tiny())).features[0]
    for precision in ("amp_bf16", "tf32"):
        bb = _tiny(precision=precision)
        assert (
            _cosine(extract_features(bb, paths[:6], build_transform(bb)).features[0], ref).min()
            >= 0.999
        )


def test_fp16_on_cpu_is_a_clear_error():
    with pytest.raises(BackboneError, match="CUDA"):
        _tiny(precision="fp16")


@pytest.mark.parametrize(
    "device",
    [
        "cpu",  # torchvision's CPU decoder through the same code path
        pytest.param(
            "cuda",
            marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
            ],
        ),
    ],
)
def test_device_decode_path_matches_pil_path(jpeg_set, device):
    paths, _ = jpeg_set
    bb = _tiny().to(device)
    tf = build_transform(bb)
    pil = extract_features(bb, paths, tf, device=device)
    dev = extract_features(bb, paths, tf, [None], device, Loader(batch_size=7, decode="nvjpeg"))
    assert dev.paths == pil.paths
    assert _cosine(dev.features[0], pil.features[0]).min() >= 0.999


def test_device_decode_routes_odd_files_through_pil(tmp_path: Path):
    files = make_hostile_files(tmp_path)
    kinds = {}
    for name, path in files.items():
        try:
            kinds[name] = read_payload(str(path))[0]
        except Exception as err:  # unreadable files raise exactly as on the PIL path
            kinds[name] = type(err).__name__
    assert "jpeg" in kinds.values() and "pixels" in kinds.values()
    assert all(kinds[n] != "jpeg" for n in kinds if "exif" in n or "cmyk" in n)
    assert all(kinds[n] == "UnreadableImageError" for n in kinds if "zero" in n)
    payload = [read_payload(str(p)) for p in files.values() if read_payload_ok(p)]
    decoded = decode_on_device(
        payload, [str(p) for p in files.values() if read_payload_ok(p)], "cpu"
    )
    assert all(
        isinstance(x, torch.Tensor) and x.shape[0] == 3 and x.dtype == torch.uint8 for x in decoded
    )


def read_payload_ok(path: Path) -> bool:
    try:
        read_payload(str(path))
        return True
    except Exception:
        return False


def _odd_size_images() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    sizes = [(300, 400), (300, 400), (256, 256), (180, 500), (300, 400), (90, 120)]
    return [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in sizes]


def test_batched_resize_equals_resizing_one_by_one(monkeypatch):
    monkeypatch.setattr(preprocess, "RESIZE_CHUNK", 2)  # three 300x400 images: two chunks
    images = _odd_size_images()
    batched = preprocess.resize_grouped(images, 256)
    for image, out in zip(images, batched):
        assert torch.equal(out, TF.resize(image, [256, 256], antialias=True))


@pytest.mark.parametrize("protocol", ["paper", "univfd"])
@pytest.mark.parametrize("train", [False, True])
def test_geometry_batch_equals_geometry_per_image(protocol, train):
    tf = preprocess.ImageTransform(protocol, 224, (0.5,) * 3, (0.25,) * 3, train=train)
    images = _odd_size_images()
    batched = tf.geometry_batch(
        images, [torch.Generator().manual_seed(i) for i in range(len(images))]
    )
    assert batched.shape == (len(images), 3, 224, 224) and batched.dtype == torch.uint8
    for i, image in enumerate(images):
        assert torch.equal(batched[i], tf.geometry(image, torch.Generator().manual_seed(i)))
        if not train:  # the protocols of SPEC §3, written out independently
            sized = TF.resize(image, [256, 256], antialias=True) if protocol == "paper" else image
            h, w = sized.shape[-2:]
            ph, pw = max(0, 224 - h), max(0, 224 - w)
            sized = TF.pad(sized, [pw // 2, ph // 2, pw - pw // 2, ph - ph // 2], fill=0)
            assert torch.equal(batched[i], TF.center_crop(sized, [224, 224]))


def test_padded_run_sees_one_shape_and_drops_the_padding():
    seen = []

    def tower(x):
        seen.append(tuple(x.shape))
        return x.flatten(1).sum(1, keepdim=True) * torch.ones(1, 5)

    images = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    out = run_padded(tower, images, 4)
    assert seen == [(4, 3, 4, 4)]
    torch.testing.assert_close(out, tower(images))


def test_compile_option_pads_every_batch_to_one_growing_shape(jpeg_set, monkeypatch):
    """The batching around torch.compile, not compilation: torch.compile is the identity here.

    The tower must see one batch size (the largest so far; shorter batches zero-padded) and
    the padding must not change the real rows' features.
    """
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    plain, compiled = _tiny(), _tiny(compile=True)
    shapes = []
    compiled.visual.register_forward_pre_hook(lambda m, args: shapes.append(args[0].shape[0]))
    x = torch.randn(
        7, 3, plain.image_size, plain.image_size, generator=torch.Generator().manual_seed(0)
    )
    first, second = compiled(x[:4]), compiled(x[4:])
    assert compiled.static_batch == 4 and shapes == [4, 4]
    torch.testing.assert_close(torch.cat([first, second]), plain(x), rtol=1e-4, atol=1e-5)
    whole = compiled(x)  # a larger batch becomes the new static size
    assert compiled.static_batch == 7 and shapes[2:] == [7]
    torch.testing.assert_close(whole, plain(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # dynamo traces the whole tower: ~15 s on 2 busy cores
def test_real_torch_compile_sees_one_batch_shape(monkeypatch):
    """Real dynamo tracing of the tiny tower (a counting backend instead of inductor's codegen):
    shorter batches never make a graph of a new shape; a larger batch makes one of its own."""
    traced: list[list[tuple[int, ...]]] = []  # per traced graph: its 4-d inputs' shapes

    def counting_backend(gm, example_inputs):
        traced.append([tuple(t.shape) for t in example_inputs if t.dim() == 4])
        return gm.forward

    real_compile = torch.compile
    monkeypatch.setattr(
        torch, "compile", lambda fn, **kw: real_compile(fn, backend=counting_backend, **kw)
    )
    torch._dynamo.reset()
    try:
        plain, compiled = _tiny(), _tiny(compile=True)
        size = plain.image_size
        x = torch.randn(7, 3, size, size, generator=torch.Generator().manual_seed(0))
        parts = [compiled(x[:4]), compiled(x[4:]), compiled(x[4:6]), compiled(x[:4])]
        # One graph for (4, 3, S, S); at most one more of the same shape: the zero-padded batch
        # is made under inference_mode, a tensor kind dynamo guards on separately.
        assert 1 <= len(traced) <= 2 and all((4, 3, size, size) in g for g in traced)
        torch.testing.assert_close(torch.cat(parts[:2]), plain(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(parts[2], plain(x[4:6]), rtol=1e-4, atol=1e-5)
        n_graphs = len(traced)
        compiled(x)  # 7 rows: the static size grows, a graph of the new shape
        assert len(traced) > n_graphs and (7, 3, size, size) in traced[n_graphs]
    finally:
        torch._dynamo.reset()
