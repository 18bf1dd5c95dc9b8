"""Sensor data: readers (npy, npz, CSV, .ts), labels, windowing, batching, few-label draws, metrics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from wavssl.data.sensor import (
    SensorDataError,
    batch_order,
    check_series,
    collate,
    draw_per_class,
    label_names,
    load_series,
    time_stretch,
    window,
)
from wavssl.train.classify import classification_metrics

# A small .ts file as aeon/sktime write it: comments, header, 2 dimensions, unequal lengths, a
# missing value ('?'), class labels last.
TS_TEXT = """# Two-dimensional toy problem
#   written by hand in the aeon .ts format
@problemName Toy
@timeStamps false
@missing true
@univariate false
@dimensions 2
@equalLength false
@classLabel true walk run
@data
1.0,2.0,3.0,4.0:10.0,20.0,30.0,40.0:walk
5.5,?,7.5:0.5,0.25,0.125:run
1,2,3,4,5,6:6,5,4,3,2:walk
"""


def test_ts_reader_labels_missing_and_unequal_dimensions(tmp_path: Path) -> None:
    path = tmp_path / "toy_TRAIN.ts"
    path.write_text(TS_TEXT)
    data = load_series(path)
    assert len(data) == 3 and data.channels == 2
    assert data.labels == ["walk", "run", "walk"]
    np.testing.assert_allclose(data.series[0], [[1, 2, 3, 4], [10, 20, 30, 40]])
    assert math.isnan(data.series[1][0, 1]) and data.series[1][0, 2] == 7.5
    # dimensions of unequal length within a series: the shorter one is padded with NaN (missing)
    assert data.series[2].shape == (2, 6) and math.isnan(data.series[2][1, 5])
    assert data.num_missing == 2
    assert data.sources[1].endswith("toy_TRAIN.ts[1]")


def test_ts_reader_timestamps_and_errors(tmp_path: Path) -> None:
    stamped = tmp_path / "stamped.ts"
    stamped.write_text("@problemName S\n@timeStamps true\n@univariate true\n@classLabel true 1 2\n@data\n"
                       "(2007-01-01 00:00:00,241.5),(2007-01-01 00:01:00,240.0):1\n")
    data = load_series(stamped)
    np.testing.assert_allclose(data.series[0], [[241.5, 240.0]])
    bad = tmp_path / "bad.ts"
    bad.write_text(TS_TEXT.replace("5.5,?,7.5:0.5", "5.5,x,7.5:0.5"))
    with pytest.raises(SensorDataError, match=r"bad.ts: line 12: 'x' is not a number"):
        load_series(bad)
    undeclared = tmp_path / "undeclared.ts"
    undeclared.write_text(TS_TEXT.replace(":run\n", ":swim\n"))
    with pytest.raises(SensorDataError, match="'swim' is not declared"):
        load_series(undeclared)
    with pytest.raises(SensorDataError, match="no @data line"):
        (tmp_path / "empty.ts").write_text("@problemName X\n")
        load_series(tmp_path / "empty.ts")


def test_numpy_readers_and_labels_tables(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(4, 3, 20)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "y.csv").write_text("label\na\nb\na\nb\n")
    data = load_series(tmp_path / "x.npy", labels=tmp_path / "y.csv")
    assert len(data) == 4 and data.channels == 3 and data.labels == ["a", "b", "a", "b"]
    np.testing.assert_array_equal(data.series[2], x[2])
    (tmp_path / "short.csv").write_text("label\na\n")
    with pytest.raises(SensorDataError, match="1 labels for 4 series"):
        load_series(tmp_path / "x.npy", labels=tmp_path / "short.csv")

    # a list of (C, T_i) arrays of different lengths, plus an X/y archive
    np.savez(tmp_path / "list.npz", np.ones((2, 5)), np.zeros((2, 9)), np.arange(12.0).reshape(2, 6))
    listed = load_series(tmp_path / "list.npz")
    assert [s.shape for s in listed.series] == [(2, 5), (2, 9), (2, 6)] and listed.labels is None
    np.savez(tmp_path / "xy.npz", X=x, y=np.array([3, 1, 2, 10]))
    xy = load_series(tmp_path / "xy.npz")
    assert xy.labels == ["3", "1", "2", "10"] and label_names(xy.labels) == ["1", "2", "3", "10"]

    # one long (C, T) recording in a .npy, and a refused pickled object array
    np.save(tmp_path / "long.npy", np.zeros((3, 1000), dtype=np.float32))
    assert load_series(tmp_path / "long.npy").series[0].shape == (3, 1000)
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = np.zeros((1, 3)), np.zeros((1, 4))
    np.save(tmp_path / "ragged.npy", ragged, allow_pickle=True)
    with pytest.raises(SensorDataError, match="np.savez"):
        load_series(tmp_path / "ragged.npy")


def test_csv_folder_with_time_column_and_labels_tsv(tmp_path: Path) -> None:
    root = tmp_path / "csv"
    root.mkdir()
    # 2 channels at irregular times, resampled onto a 10 Hz grid; an empty cell is missing
    (root / "rec1.csv").write_text("time,ax,ay\n0.0,0,10\n0.05,,\n0.1,1,11\n0.3,3,13\n")
    (root / "rec2.csv").write_text("1,2\n3,4\n5,nan\n")  # no header: every column is a channel
    (root / "labels.tsv").write_text("file\tlabel\nrec1.csv\tsit\nrec2\tstand\n")
    data = load_series(root, sample_rate=10)
    assert data.labels == ["sit", "stand"]
    np.testing.assert_allclose(data.series[0], [[0, 1, 2, 3], [10, 11, 12, 13]], atol=1e-6)
    assert data.series[1].shape == (2, 3) and math.isnan(data.series[1][1, 2])

    (root / "labels.tsv").write_text("file\tlabel\nrec1.csv\tsit\n")
    with pytest.raises(SensorDataError, match="no label for .*rec2.csv"):
        load_series(root)
    (root / "rec3.csv").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(SensorDataError, match="rec3.csv: 3 channels, but .*rec1.csv has 2"):
        load_series(root, labels=None)
    (root / "rec3.csv").write_text("a,b\n1,x\n")
    with pytest.raises(SensorDataError, match=r"rec3.csv: line 2, column 2: 'x' is not a number"):
        load_series(root)


def test_windowing_covers_the_tail_and_keeps_labels() -> None:
    from wavssl.data.sensor import SeriesSet

    long = np.arange(2 * 25, dtype=np.float32).reshape(2, 25)
    data = SeriesSet([long, np.ones((2, 6), np.float32)], ["a", "b"], ["long", "short"], [0, 1])
    w = window(data, 10, 5)
    starts = [int(s.split("@")[1]) for s in w.sources if "@" in s]
    assert starts == [0, 5, 10, 15]  # 15 = 25 - 10: the last window is aligned to the end
    assert all(s.shape == (2, 10) for s in w.series[:4]) and w.series[4].shape == (2, 6)
    np.testing.assert_array_equal(w.series[3], long[:, 15:])
    assert w.labels == ["a"] * 4 + ["b"] and w.groups == [0, 0, 0, 0, 1]
    assert window(data, 0) is data


def test_checks_batches_and_draws() -> None:
    from wavssl.data.sensor import SeriesSet

    rng = np.random.default_rng(0)
    series = [rng.normal(size=(3, n)).astype(np.float32) for n in rng.integers(4, 30, size=40)]
    labels = [str(i % 4) for i in range(40)]
    data = SeriesSet(series, labels, [f"f[{i}]" for i in range(40)], list(range(40)))
    with pytest.raises(SensorDataError, match="has 3 channel.*the checkpoint runs/x expects 6"):
        check_series(data, channels=6, min_length=1, expected_by="the checkpoint runs/x")
    with pytest.raises(SensorDataError, match=r"receptive field of 6 samples.*f\[\d+\] \(\d steps\)"):
        check_series(data, channels=3, min_length=6, expected_by="the config")
    check_series(data, channels=3, min_length=4, expected_by="the config")

    order = batch_order(data.lengths, 8, seed=3, epoch=1)
    assert sorted(np.concatenate(order).tolist()) == list(range(40))
    assert all(np.array_equal(a, b) for a, b in zip(order, batch_order(data.lengths, 8, seed=3, epoch=1)))
    assert not all(np.array_equal(a, b) for a, b in zip(order, batch_order(data.lengths, 8, seed=3, epoch=2)))

    batch = collate([data.series[i] for i in order[0]], [0] * len(order[0]))
    assert batch.series.shape[:2] == (8, 3) and batch.series.shape[2] == int(batch.lengths.max())

    picked = draw_per_class(data, 2, seed=5)
    assert sorted(np.bincount([int(labels[i]) for i in picked]).tolist()) == [2, 2, 2, 2]
    assert np.array_equal(picked, draw_per_class(data, 2, seed=5))
    assert len(draw_per_class(data, 0, seed=5)) == 40 and len(draw_per_class(data, 50, seed=5)) == 40


def test_time_stretch_resamples_the_same_curve() -> None:
    t = np.linspace(0.0, 1.0, 101)
    series = np.stack([np.sin(2 * np.pi * t), t]).astype(np.float32)  # (2, 101)
    slow = time_stretch(series, 1.5)
    fast = time_stretch(series, 0.5)
    assert slow.shape == (2, 152) and fast.shape == (2, 50) and slow.dtype == np.float32
    for out in (slow, fast):  # same start, end and curve, on a denser or coarser grid
        grid = np.linspace(0.0, 1.0, out.shape[1])
        np.testing.assert_allclose(out[0], np.sin(2 * np.pi * grid), atol=2e-3)
        np.testing.assert_allclose(out[1], grid, atol=1e-6)
    assert time_stretch(series, 1.0) is series
    assert time_stretch(series[:, :1], 3.0).shape == (2, 3) and time_stretch(series, 0.001).shape == (2, 1)
    nan = series.copy()
    nan[1, 50] = np.nan
    assert 1 <= np.isnan(time_stretch(nan, 1.5)[1]).sum() <= 4 and not np.isnan(time_stretch(nan, 1.5)[0]).any()


def test_time_stretch_augments_training_batches_reproducibly() -> None:
    import dataclasses

    from wavssl import config as C
    from wavssl.data.sensor import SeriesSet
    from wavssl.train.classify import ClassifyTask

    rng = np.random.default_rng(0)
    series = [rng.normal(size=(2, n)).astype(np.float32) for n in rng.integers(20, 40, size=12)]
    data = SeriesSet(series, [str(i % 3) for i in range(12)], [f"f{i}" for i in range(12)], list(range(12)))
    cfg = C.preset("sensor-tiny")
    plain = ClassifyTask(data, ["0", "1", "2"], cfg)
    cfg = dataclasses.replace(cfg, classify=dataclasses.replace(cfg.classify, time_stretch=0.5),
                              data=dataclasses.replace(cfg.data, batch_size=4))
    task = ClassifyTask(data, ["0", "1", "2"], cfg)
    first = list(task.batches(epoch=0, start=0))
    again = list(task.batches(epoch=0, start=1))  # resuming mid-epoch gives the same later batches
    assert all(torch_equal(a.batch.series, b.batch.series) for a, b in zip(first[1:], again))
    stretched = np.concatenate([b.batch.lengths.numpy() for b in first])
    original = np.concatenate([data.lengths[b.indices] for b in first])
    assert (stretched != original).mean() > 0.5
    assert np.all(stretched <= np.round(original * 1.5) + 1) and np.all(stretched >= np.floor(original / 1.5))
    assert not torch_equal(first[0].batch.series, list(task.batches(epoch=1, start=0))[0].batch.series)
    with pytest.raises(C.ConfigError, match="classify.time_stretch must be >= 0"):
        dataclasses.replace(cfg, classify=dataclasses.replace(cfg.classify, time_stretch=-0.1)).validate()
    unchanged = list(plain.batches(epoch=0, start=0))[0]
    assert unchanged.batch.lengths.tolist() == data.lengths[unchanged.indices].tolist()


def test_time_stretch_augments_sensor_pretraining_batches() -> None:
    import dataclasses

    from wavssl import config as C
    from wavssl.data.sensor import SeriesSet
    from wavssl.train.pretraining import SensorPretrainTask

    rng = np.random.default_rng(1)
    series = [rng.normal(size=(1, n)).astype(np.float32) for n in rng.integers(30, 60, size=10)]
    data = SeriesSet(series, None, [f"f{i}" for i in range(10)], list(range(10)))
    cfg = C.preset("sensor-tiny")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, batch_size=4))
    plain = list(SensorPretrainTask(data, cfg).batches(epoch=0, start=0))
    assert all(b.batch.lengths.max() == b.batch.series.shape[-1] for b in plain)
    assert sorted(np.concatenate([b.batch.lengths.numpy() for b in plain]).tolist()) == sorted(data.lengths.tolist())
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, time_stretch=0.5)).validate()
    task = SensorPretrainTask(data, cfg)
    first = list(task.batches(epoch=0, start=0))
    again = list(task.batches(epoch=0, start=1))  # resuming mid-epoch: the same later batches and masks
    assert all(torch_equal(a.batch.series, b.batch.series) and torch_equal(a.masks.mask, b.masks.mask)
               for a, b in zip(first[1:], again))
    lengths = np.concatenate([b.batch.lengths.numpy() for b in first])
    assert len(lengths) == len(data) and (np.sort(lengths) != np.sort(data.lengths)).any()
    assert lengths.min() >= np.floor(data.lengths.min() / 1.5) and lengths.max() <= np.round(data.lengths.max() * 1.5) + 1
    for b in first:  # masks are drawn for the stretched series: one frame per step with this front end
        assert b.masks.mask.shape[-1] == b.batch.series.shape[-1] - 2
    assert not torch_equal(first[0].batch.series, list(task.batches(epoch=1, start=0))[0].batch.series)
    with pytest.raises(C.ConfigError, match="data.time_stretch must be >= 0"):
        dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, time_stretch=-1.0)).validate()
    speech = C.preset("tiny")
    with pytest.raises(C.ConfigError, match="sensor series only"):
        dataclasses.replace(speech, data=dataclasses.replace(speech.data, time_stretch=0.2)).validate()


def torch_equal(a: object, b: object) -> bool:
    import torch

    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and bool(torch.equal(a, b))


def test_classification_metrics_accuracy_and_macro_f1() -> None:
    truth = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 1, 0])
    m = classification_metrics(truth, pred, ["a", "b", "c"])
    assert m.accuracy == pytest.approx(4 / 6)
    f1 = {"a": 2 * 2 / (3 + 3), "b": 2 * 2 / (2 + 3), "c": 0.0}
    assert m.per_class_f1 == pytest.approx(f1)
    assert m.macro_f1 == pytest.approx(sum(f1.values()) / 3)
    assert m.confusion == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]


RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "sensors"


def test_recipe_configs_resolve_and_fit_the_shortest_series() -> None:
    from wavssl import config as C
    from wavssl.train.pretraining import sensor_receptive_field

    shortest = {"JapaneseVowels": 7, "PickupGestureWiimoteZ": 29, "BasicMotions": 100}
    for name, length in shortest.items():
        cfg = C.resolve("sensor-tiny", RECIPE / "configs" / f"{name}.toml")
        assert cfg.model.frontend.kind == "sensor"
        assert sensor_receptive_field(cfg) <= length, name


def test_ts_reader_matches_aeon_on_its_bundled_files() -> None:
    datasets = pytest.importorskip("aeon.datasets")
    root = Path(datasets.__file__).parent / "data" / "JapaneseVowels"
    ours = load_series(root / "JapaneseVowels_TEST.ts")
    X, y = datasets.load_from_ts_file(str(root / "JapaneseVowels_TEST.ts"))
    assert ours.labels == [str(v) for v in y] and len(ours) == len(X) == 370
    for a, b in zip(ours.series, X):
        np.testing.assert_allclose(a, b, rtol=1e-6)


class _RecordingSession:
    """Stands in for an onnxruntime session: keeps the inputs, returns uniform log-probabilities."""

    def __init__(self, classes: int) -> None:
        self.classes, self.feeds = classes, []

    def run(self, _outputs: None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.feeds.append(feeds)
        batch = feeds["series"].shape[0]
        return [np.full((batch, self.classes), -math.log(self.classes), dtype=np.float32)]


def _series_files(root: Path) -> dict[str, float]:
    """Series files of every format both sides read -> the sample rate to read them at."""
    rng = np.random.default_rng(7)
    times = np.cumsum(rng.uniform(0.004, 0.05, size=40))  # uneven spacing, not starting at 0
    rows = [f"{t},{'' if i == 5 else a},{b}" for i, (t, a, b) in
            enumerate(zip(times.tolist(), rng.normal(size=40).tolist(), rng.normal(size=40).tolist()))]
    (root / "uneven.csv").write_text("time,ax,ay\n" + "\n".join(rows) + "\n")
    # evenly spaced at the rate, 58 rows: 0.57 s * 100 Hz is 56.99999... in floating point
    (root / "even.csv").write_text("ax,t,ay\n" + "".join(f"{i},{i / 100},{-i}\n" for i in range(58)))
    (root / "plain.csv").write_text("1,2\n3,NA\n5,6\n")
    (root / "plain.tsv").write_text("ax\tay\n1\t2\n\n3\t?\n")
    np.save(root / "stack.npy", rng.normal(size=(3, 2, 17)).astype(np.float32))
    np.save(root / "mono.npy", rng.normal(size=25))
    np.savez(root / "list.npz", rng.normal(size=(2, 9)), rng.normal(size=(2, 4)))
    np.savez(root / "xy.npz", X=rng.normal(size=(2, 2, 6)), y=np.array([1, 0]))
    (root / "toy.ts").write_text(TS_TEXT)
    return {"uneven.csv": 50.0, "even.csv": 100.0, "plain.csv": 10.0, "plain.tsv": 10.0, "stack.npy": 100.0,
            "mono.npy": 100.0, "list.npz": 100.0, "xy.npz": 100.0, "toy.ts": 100.0}


def test_training_and_runtime_read_the_same_series(tmp_path: Path) -> None:
    """Train/serve skew guard: every series file gives the same arrays in training
    (``wavssl.data.sensor.load_series``) and in the runtime (``wavssl_onnx.classifier.load_series`` and
    the batch ``Classifier.run`` feeds its graph), a CSV time column at uneven spacing included."""
    from wavssl_onnx.classifier import Classifier
    from wavssl_onnx.classifier import load_series as runtime_series
    from wavssl_onnx.model_dir import ModelInfo

    for name, rate in _series_files(tmp_path).items():
        train = load_series(tmp_path / name, sample_rate=rate).series
        serve = runtime_series(tmp_path / name, rate)
        assert len(train) == len(serve) > 0, name
        for a, b in zip(train, serve):
            assert a.dtype == b.dtype == np.float32 and a.shape == b.shape, name
            np.testing.assert_array_equal(a, b, err_msg=name)

    uneven = load_series(tmp_path / "uneven.csv", sample_rate=50).series[0]
    times = np.array([float(r.split(",")[0]) for r in (tmp_path / "uneven.csv").read_text().splitlines()[1:]])
    assert uneven.shape == (2, math.floor((times[-1] - times[0]) * 50) + 1)  # a 50 Hz grid, not the 40 rows
    even = load_series(tmp_path / "even.csv", sample_rate=100).series[0]
    np.testing.assert_array_equal(even, [np.arange(58), -np.arange(58)])  # on the grid: the rows as they are

    info = ModelInfo(kind="classify", sample_rate=50, frame_shift=0.02, frame_shift_samples=1, min_samples=1,
                     inputs=["series", "lengths"], outputs=["log_probs"], files={"fp32": "model.onnx"},
                     class_names=["a", "b"], in_channels=2)
    session = _RecordingSession(2)
    (result,) = Classifier(info, session).run([tmp_path / "uneven.csv"])
    assert result.error is None
    batch = collate([uneven])
    np.testing.assert_array_equal(session.feeds[0]["series"], batch.series.numpy())
    np.testing.assert_array_equal(session.feeds[0]["lengths"], batch.lengths.numpy())
