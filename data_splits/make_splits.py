"""Write seeded k-fold split files for a dataset in the standard layout.

Reads the image ids from ``<data-root>/images`` and writes
``<output-dir>/fold<k>.csv`` (columns image_id, patient_id, part), one per fold.

Example:
    python data_splits/make_splits.py --data-root ../shared/data/jsrt224 \
        --output-dir data_splits/jsrt224 --folds 5 --seed 2026
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hemidiaphragm.datasets import list_image_ids
from hemidiaphragm.runs import atomic_write_csv, atomic_write_text, run_script, seed_value
from hemidiaphragm.splits import check_split, make_folds


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, required=True, help="dataset folder with images/")
    parser.add_argument("--output-dir", type=Path, required=True, help="folder for fold<k>.csv files")
    parser.add_argument("--folds", type=int, default=5, help="number of folds K (at least 3)")
    parser.add_argument("--seed", type=seed_value, default=2026, help="seed of the patient shuffle")
    parser.add_argument(
        "--group-regex", default=None,
        help="regex whose first group is the patient id of an image id; default: one patient per image",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing fold files")
    return parser


def main(args: argparse.Namespace) -> None:
    image_ids = list_image_ids(args.data_root / "images")
    folds = make_folds(image_ids, args.folds, args.seed, args.group_regex)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    existing = sorted(args.output_dir.glob("fold*.csv"))
    if existing and not args.overwrite:
        raise SystemExit(f"{args.output_dir} already has {len(existing)} fold files; pass --overwrite to replace them")
    written = []
    for index, frame in enumerate(folds):
        check_split(frame, f"fold {index}")
        written.append(args.output_dir / f"fold{index}.csv")
        atomic_write_csv(written[-1], frame)
    # Fold files of an earlier run with more folds would mix two partitions in one folder.
    for stale in set(existing) - set(written):
        stale.unlink()
    atomic_write_text(
        args.output_dir / "README.txt",
        f"{len(image_ids)} images from {args.data_root.name}/images, {args.folds} folds, seed {args.seed}, "
        f"group regex {args.group_regex!r}.\nFold k: test = group k, val = group k+1 mod K, train = the rest.\n",
    )
    counts = folds[0]["part"].value_counts().to_dict()
    print(f"wrote {args.folds} folds to {args.output_dir}; fold0 parts: {counts}")


if __name__ == "__main__":
    run_script(main, get_args_parser())
