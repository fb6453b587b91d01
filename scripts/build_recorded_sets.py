"""Rebuild effagent/data/routing/*.jsonl.gz (the recorded routing outcomes shipped with the package) from the
raw shared data: ``python scripts/build_recorded_sets.py [RAW_DIR]`` (default: $EFFAGENT_DATA_DIR, else
../shared/data from the project root)."""

from __future__ import annotations

import sys
from pathlib import Path

from effagent.data import data_dir
from effagent.data.recorded import SHIPPED_DIR, build_all, save


def main(argv: list[str]) -> int:
    raw = Path(argv[0]) if argv else data_dir() or Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not (raw / "routing").is_dir():
        print(f"error: {raw}/routing not found; pass the raw data folder", file=sys.stderr)
        return 2
    total = 0
    for rs in build_all(raw):
        path = save(rs, SHIPPED_DIR)
        total += path.stat().st_size
        size = path.stat().st_size / 1e3
        print(f"{path.relative_to(SHIPPED_DIR.parents[2])}: {len(rs.rows):5d} rows, {size:7.1f} kB")
    print(f"total {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
