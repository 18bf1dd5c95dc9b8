"""Copy the sensor data sets that ship inside the aeon wheel into a data folder (no download).

    python recipes/sensors/prepare.py --out data/sensors
    python recipes/sensors/prepare.py --out data/sensors --datasets BasicMotions

Writes ``OUT/<name>/<name>_TRAIN.ts`` and ``_TEST.ts`` (the variable-length originals wavssl reads)
and, where aeon bundles them, the equal-length ``<name>_eq_*.ts`` copies MiniRocket needs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

DATASETS = ("JapaneseVowels", "PickupGestureWiimoteZ", "BasicMotions")


def aeon_data_dir() -> Path:
    """The ``data`` folder inside the installed aeon package."""
    try:
        import aeon.datasets
    except ImportError:
        sys.exit("aeon is not installed: pip install 'aeon>=1.0' (or pip install -e '.[bench]')")
    return Path(aeon.datasets.__file__).parent / "data"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("data/sensors"), help="destination folder")
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated data set names")
    a = p.parse_args()
    src_root = aeon_data_dir()
    for name in (d.strip() for d in a.datasets.split(",") if d.strip()):
        files = sorted((src_root / name).glob(f"{name}*_T*.ts"))
        if not files:
            sys.exit(f"{src_root / name}: no .ts files for {name} in this aeon installation")
        dest = a.out / name
        dest.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy2(f, dest / f.name)
        print(f"{name}: {', '.join(f.name for f in files)} -> {dest}")


if __name__ == "__main__":
    main()
