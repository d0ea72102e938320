"""Datasets by name through torchgeo's own classes, on tiny files in each dataset's published layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from warmstart.errors import ConfigError, DataError
from warmstart_eo import layouts
from warmstart_eo.cli import app
from warmstart_eo.data import DataConfig, compute_stats
from warmstart_eo.datasets import load_named
from warmstart_eo.models import load_model


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("layouts")
    return {
        "eurosat": layouts.write_eurosat(base / "eurosat"),
        "eurosat100": layouts.write_eurosat(base / "eurosat100", variant="eurosat100"),
        "bigearthnet": layouts.write_bigearthnet(base / "bigearthnet"),
        "so2sat": layouts.write_so2sat(base / "so2sat"),
        "ssl4eo-s12": layouts.write_ssl4eo_s12(base / "ssl4eo"),
        "seco": layouts.write_seco(base / "seco"),
    }


def test_eurosat_has_ten_classes_its_splits_and_bands_by_name(roots: dict[str, Path]) -> None:
    chips = load_named("eurosat", roots["eurosat"], DataConfig())
    assert chips.num_classes == 10 and chips.classes[0] == "AnnualCrop" and chips.tasks == ("classify",)
    assert len(chips) == 40 and set(chips.split.tolist()) == {0, 1, 2}
    assert chips.bands[-1] == "B8A"  # torchgeo's EuroSAT order, named as such
    rgb = load_named("eurosat100", roots["eurosat100"], DataConfig(bands=["B4", "B3", "B2"]))  # any spelling
    full = load_named("eurosat100", roots["eurosat100"], DataConfig())
    assert torch.equal(rgb[0]["image"], full[0]["image"][[3, 2, 1]])  # picked by name, in the asked order
    assert int(chips.labels.max()) == 9


def test_real_ten_class_eurosat_finetunes_and_probes(
    roots: dict[str, Path], tmp_path: Path, capsys, tiny
) -> None:
    # used to crash: the head had the generator's 7 classes ("Target 8 is out of bounds")
    out = tmp_path / "ft"
    argv = ["finetune", "--data", "eurosat", "--root", str(roots["eurosat"]), "--out", str(out), *tiny()]
    assert app.main(argv) == 0
    model = load_model(out, kind="eo.classifier")
    assert model.head[-1].out_features == 10
    meta = json.loads((out / "config.json").read_text())
    assert meta["classes"][-1] == "SeaLake" and "health" in meta
    assert app.main(["probe", "--data", "eurosat", "--root", str(roots["eurosat"])]) == 0
    assert "stats_knn" in capsys.readouterr().out


def test_bigearthnet_multilabel_finetune_reports_map_and_f1(
    roots: dict[str, Path], tmp_path: Path, capsys, tiny
) -> None:
    chips = load_named("bigearthnet", roots["bigearthnet"], DataConfig())
    assert chips.tasks == ("multilabel",) and chips.multilabels.shape == (6, 19)
    assert chips.bands == ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
    both = load_named("bigearthnet:all", roots["bigearthnet"], DataConfig(bands=["VV", "B04"]))
    assert both[0]["image"].shape == (2, 120, 120)  # S1 + S2 by name (torchgeo reads VH before VV)
    out = tmp_path / "ml"
    argv = [
        "finetune",
        "--data",
        "bigearthnet",
        "--root",
        str(roots["bigearthnet"]),
        "--out",
        str(out),
        *tiny(),
    ]
    assert app.main(argv) == 0
    text = capsys.readouterr().out
    assert "map_macro" in text and "f1_micro" in text
    assert load_model(out, kind="eo.classifier").multilabel


def test_so2sat_ssl4eo_seco(roots: dict[str, Path]) -> None:
    so2 = load_named("so2sat", roots["so2sat"], DataConfig())
    assert so2.num_classes == 17 and so2[0]["image"].shape == (10, 32, 32) and len(so2) == 24
    ssl = load_named("ssl4eo-s12", roots["ssl4eo-s12"], DataConfig(frames=4, bands=["B04", "B08"]))
    assert ssl.tasks == () and not ssl.has_labels and ssl.frames == 4
    image = ssl[0]["image"]  # (4 seasons × 2 bands, 264, 264), time-ordered whatever torchgeo drew
    nir = image[1::2].mean(dim=(1, 2))
    assert image.shape == (8, 264, 264) and nir.argmax() in (1, 2)  # the generator's mid-year green-up
    assert compute_stats(ssl).bands == [f"t{t}:{b}" for t in range(4) for b in ("B04", "B08")]
    seco = load_named("seco", roots["seco"], DataConfig(frames=2))
    assert seco[0]["image"].shape == (24, 264, 264) and seco.bands[-1] == "B12"


def test_ssl4eo_pretrains_prithvi_and_unlabelled_data_refuses_finetune(
    roots: dict[str, Path], tmp_path: Path, capsys, tiny
) -> None:
    pre = tmp_path / "pre"
    argv = [
        "pretrain",
        "--data",
        "ssl4eo-s12",
        "--root",
        str(roots["ssl4eo-s12"]),
        "--model.family",
        "prithvi",
        "--data_config.frames",
        "4",
        "--data_config.bands",
        "[hls]",
        "--out",
        str(pre),
        *tiny(),
        "--engine.train.micro_batch_size",
        "2",
    ]
    assert app.main(argv) == 0
    mae = load_model(pre)
    assert mae.config.frames == 4 and mae.config.bands == ["B02", "B03", "B04", "B8A", "B11", "B12"]
    for command in ("finetune", "probe"):
        capsys.readouterr()
        assert app.main([command, "--data", "ssl4eo-s12", "--root", str(roots["ssl4eo-s12"])]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "no labels" in err


def test_named_dataset_errors(roots: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--root"):
        load_named("eurosat", None, DataConfig())
    with pytest.raises(DataError, match="EuroSAT.*not found"):
        load_named("eurosat", tmp_path, DataConfig())
    with pytest.raises(ConfigError, match="has no.*VV"):
        load_named("eurosat", roots["eurosat"], DataConfig(bands=["VV"]))


def test_corrupt_file_inside_eurosat_is_one_line_or_skipped(
    roots: dict[str, Path], tmp_path: Path, capsys
) -> None:
    import shutil

    root = tmp_path / "eurosat"
    shutil.copytree(roots["eurosat"], root)
    bad = next((root / layouts_base()).glob("Forest/Forest_1.tif"))
    bad.write_bytes(b"II*\x00 not really a tiff")
    argv = ["stats", "--data", "eurosat", "--root", str(root), "--data_config.on_bad_file", "fail"]
    assert app.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Forest_1.tif" in err
    with pytest.warns(UserWarning, match="Forest_1.tif"):
        chips = load_named("eurosat", root, DataConfig())
    assert len(chips) == 39 and chips.skipped_files == 1
    assert app.main(["stats", "--data", "eurosat", "--root", str(root)]) == 0  # no --out: <root>/stats.json
    assert len(json.loads((root / "stats.json").read_text())["mean"]) == 13


def layouts_base() -> str:
    from torchgeo.datasets import EuroSAT

    return EuroSAT.base_dir


def test_named_datasets_read_per_item_and_pickle_for_loader_workers(roots: dict[str, Path]) -> None:
    import pickle

    from warmstart_eo.data import LazyChips

    for name in ("eurosat", "bigearthnet", "so2sat"):
        chips = load_named(name, roots[name], DataConfig())
        assert isinstance(chips, LazyChips) and not hasattr(chips, "images")  # nothing held but labels
        again = pickle.loads(pickle.dumps(chips.subset([1, 0])))  # what a DataLoader worker receives
        assert torch.equal(again[1]["image"], chips[0]["image"])
