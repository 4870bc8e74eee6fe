"""python -m captioning.bench on a tiny shapes set: it prints the three times and the speedup, and
the cached epoch reads the cache the bench built (no second CNN pass)."""

from __future__ import annotations

import re

from captioning import bench
from data.datamodules.captions import CaptionDataModule


def test_bench_prints_both_epochs_and_reuses_its_cache(capsys, monkeypatch):
    calls = []
    use_features = CaptionDataModule.use_features

    def spy(self, extract, encoder, splits):
        hits = use_features(self, extract, encoder, splits)
        calls.append(hits)
        return hits

    monkeypatch.setattr(CaptionDataModule, "use_features", spy)
    bench.main(["--images", "6", "--batch-size", "8", "--device", "cpu"])
    out = capsys.readouterr().out
    numbers = {
        name: float(re.search(rf"^{name}:\s+([\d.]+)", out, flags=re.M).group(1))
        for name in ("epoch recomputing the CNN", "building the cache \\(once\\)", "epoch from the cache")
    }
    assert all(v > 0 for v in numbers.values()), out
    assert re.search(r"^speedup per epoch:\s+[\d.]+x$", out, flags=re.M), out
    assert "4 batches of 8" in out  # 6 images x 5 captions
    # the bench builds the cache (a miss), then the cached run's setup finds it (a hit)
    assert calls == [{"train": False}, {"train": True, "val": False}], calls
