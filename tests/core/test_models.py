"""core.models and core.weights: LPIPS built once per (net, device), from files on disk only."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from core import MODEL_CACHE, Finder, WeightsMissingError
from core.weights import BACKBONES, checkpoint_dir, require_weights, weights_status


@pytest.fixture
def count_builds(lpips_home, monkeypatch) -> list[str]:
    """Count every lpips.LPIPS construction, starting from an empty cache."""
    import lpips

    built: list[str] = []
    original = lpips.LPIPS

    def counting(*args, **kwargs):  # not a subclass: lpips finds its files via its class
        built.append(kwargs.get("net", "alex"))
        return original(*args, **kwargs)

    monkeypatch.setattr(lpips, "LPIPS", counting)
    MODEL_CACHE.clear()
    return built


@pytest.fixture
def no_network(monkeypatch) -> list[str]:
    """Make any download or outgoing connection fail loudly (and record it)."""
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise AssertionError(f"network access attempted: {args[:2]!r}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def test_lpips_is_built_once_per_net_and_device(count_builds, chelsea_pair) -> None:
    ref, cand = (a[:96, :128] for a in chelsea_pair)
    for strategy in ("map", "gradient", "map"):
        finder = Finder(strategy=strategy, metric="lpips", device="cpu")
        finder.run(ref, cand, return_metric=True)
        finder.run(cand, ref)
    assert count_builds == ["alex"]
    a = MODEL_CACHE.lpips("alex", "cpu")
    assert MODEL_CACHE.lpips("alex", torch.device("cpu")) is a
    assert count_builds == ["alex"]
    squeeze = MODEL_CACHE.lpips("squeeze", "cpu")
    assert squeeze is not a and count_builds == ["alex", "squeeze"]
    Finder(strategy="map", metric={"name": "lpips", "net": "squeeze"}).run(ref, cand)
    assert count_builds == ["alex", "squeeze"]
    assert sorted(MODEL_CACHE.loaded()) == [("alex", "cpu"), ("squeeze", "cpu")]
    assert set(MODEL_CACHE.load_seconds) == {("alex", "cpu"), ("squeeze", "cpu")}
    assert all(s > 0 for s in MODEL_CACHE.load_seconds.values())


def test_model_first_built_under_inference_mode_still_gives_gradients(count_builds,
                                                                     camera) -> None:
    img = camera[:64, :64]
    with torch.inference_mode():
        MODEL_CACHE.lpips("alex", "cpu")
    m = Finder(strategy="gradient", metric="lpips").run(img, img[:, ::-1].copy())
    assert np.isfinite(m).all() and m.max() > 0


def test_concurrent_first_use_builds_one_model(count_builds) -> None:
    got: list[torch.nn.Module] = []
    barrier = threading.Barrier(4)

    def use() -> None:
        barrier.wait()
        got.append(MODEL_CACHE.lpips("alex", "cpu"))

    threads = [threading.Thread(target=use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(got) == 4 and all(m is got[0] for m in got)
    assert count_builds == ["alex"]


def test_cached_model_is_frozen_eval_and_uses_the_files_weights(lpips_home) -> None:
    for net, key in (("alex", "features.0.weight"), ("squeeze", "features.0.weight")):
        model = MODEL_CACHE.lpips(net, "cpu")
        assert not model.training
        assert not any(p.requires_grad for p in model.parameters())
        on_disk = torch.load(require_weights(net), map_location="cpu", weights_only=True)
        # The backbone holds exactly the file's values: never a random initialisation.
        torch.testing.assert_close(model.net.slice1[0].weight, on_disk[key], rtol=0, atol=0)


def test_warm_builds_and_runs(count_builds) -> None:
    MODEL_CACHE.warm("squeeze", "cpu", size=32)
    assert MODEL_CACHE.loaded() == [("squeeze", "cpu")]
    MODEL_CACHE.warm("squeeze", "cpu")
    assert count_builds == ["squeeze"]


def test_missing_weights_is_a_fast_clear_error(empty_torch_home, no_network, camera) -> None:
    assert checkpoint_dir() == empty_torch_home / "hub" / "checkpoints"
    assert weights_status() == {"alex": False, "vgg": False, "squeeze": False}
    img = camera[:64, :64]
    for net, strategy in (("alex", "map"), ("squeeze", "gradient"), ("vgg", "difference")):
        start = time.perf_counter()
        finder = Finder(strategy=strategy, metric={"name": "lpips", "net": net})
        with pytest.raises(WeightsMissingError) as info:
            finder.run(img, img, return_metric=True)
        assert time.perf_counter() - start < 5.0
        backbone = BACKBONES[net]
        msg = str(info.value)
        assert backbone.filename in msg and backbone.url in msg and "TORCH_HOME" in msg
        assert info.value.extra == {"file": str(checkpoint_dir() / backbone.filename),
                                    "url": backbone.url, "net": net}
        assert info.value.status == 503
    assert no_network == []
    assert MODEL_CACHE.loaded() == []
    assert not any(empty_torch_home.rglob("*.pth*"))  # nothing half-downloaded either
    with pytest.raises(WeightsMissingError):
        MODEL_CACHE.warm("alex", "cpu")


def test_empty_file_counts_as_missing(empty_torch_home, no_network) -> None:
    ckpt = empty_torch_home / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    (ckpt / BACKBONES["alex"].filename).write_bytes(b"")
    with pytest.raises(WeightsMissingError, match=BACKBONES["alex"].filename):
        MODEL_CACHE.lpips("alex", "cpu")


def test_one_net_present_another_missing(lpips_home, tmp_path, monkeypatch, no_network,
                                         camera) -> None:
    ckpt = tmp_path / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    alex = BACKBONES["alex"].filename
    os.symlink(Path(lpips_home) / "hub" / "checkpoints" / alex, ckpt / alex)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    MODEL_CACHE.clear()
    try:
        assert weights_status() == {"alex": True, "vgg": False, "squeeze": False}
        img = camera[:64, :64]
        m = Finder(strategy="map", metric="lpips").run(img, img[::-1].copy())
        assert m.shape == (64, 64) and np.isfinite(m).all() and m.max() > 0
        with pytest.raises(WeightsMissingError, match=BACKBONES["squeeze"].filename):
            Finder(strategy="map", metric={"name": "lpips", "net": "squeeze"}).run(img, img)
    finally:
        MODEL_CACHE.clear()
    assert no_network == []


def test_weights_status_in_the_stand_in_home(lpips_home) -> None:
    assert checkpoint_dir() == Path(lpips_home) / "hub" / "checkpoints"
    assert weights_status() == {"alex": True, "vgg": False, "squeeze": True}
    assert require_weights("alex").name == BACKBONES["alex"].filename
    with pytest.raises(WeightsMissingError, match=r"vgg16-397923af\.pth"):
        require_weights("vgg")
