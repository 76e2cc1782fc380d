"""Stage 1 of the pipeline: train a U-Net that segments the patient-right and left lungs.

Reads:  <data-root>/images/<id>.png, <data-root>/masks/<id>.png and a split file
        (data_splits/<dataset>/fold<k>.csv; train and val parts are used here).
Writes: <output-dir>/run.json (arguments, command, git commit, versions, device),
        train.log, metrics.csv (one row per epoch), curves.png, last.pt and best.pt.

Example:
    python segmentation_train/train.py --data-root ../shared/data/jsrt224 \
        --split data_splits/jsrt224/fold0.csv --output-dir runs/seg/jsrt224_fold0
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

from hemidiaphragm.checkpoint import (
    load_resumed_run,
    restore_rng_state,
    rng_state,
    save_checkpoint,
    to_plain,
)
from hemidiaphragm.datasets import MaskEncoding, default_mask_encoding
from hemidiaphragm.models import build_unet, check_unet_input_size
from hemidiaphragm.runs import (
    MetricsLog,
    RunArgumentParser,
    add_run_control_arguments,
    check_ranges,
    decoder_widths,
    plot_curves,
    pop_explicit_options,
    prepare_output_dir,
    resolve_device,
    run_script,
    seed_everything,
    setup_logging,
    write_run_record,
)
from hemidiaphragm.segmentation import NUM_CLASSES, SegmentationDataset, batch_dice, dice_ce_loss
from hemidiaphragm.splits import ids_in, read_split

LOGGER = logging.getLogger("segmentation_train")

# Flags that may differ between the interrupted and the resumed invocation.
# The output folder is always the one given, so a copied or moved run resumes in place.
RESUME_OVERRIDABLE = ("device", "resume", "no_progress", "threads", "max_minutes", "output_dir")
# Flags that a resumed invocation may change only when given explicitly; changing them
# means the resumed run no longer ends where the uninterrupted one would. Any other flag
# given with a value that differs from the stored one stops the resume with an error.
RESUME_CHANGEABLE = ("epochs",)
PATH_ARGUMENTS = ("data_root", "split", "output_dir")
DEFAULT_EPOCHS = 40


def get_args_parser() -> argparse.ArgumentParser:
    parser = RunArgumentParser(description="Train the lung segmentation U-Net.")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="dataset folder with images/ and masks/ (not needed with --resume)")
    parser.add_argument("--split", type=Path, default=None,
                        help="split CSV (image_id, patient_id, part); not needed with --resume")
    parser.add_argument("--output-dir", type=Path, required=True, help="new folder for this run's files")
    parser.add_argument(
        "--mask-encoding", default=None,
        help="'labels:R,L' (values of the patient-right and left lung) or 'combined' (one mask of both "
             "lungs, split by connected components); default: the preset for the dataset folder name "
             "(jsrt224: labels:150,200, shenzhen512: combined), else labels:1,2",
    )
    parser.add_argument("--input-size", type=int, default=224,
                        help="side of the square network input in pixels (aspect ratio kept, zero padded)")
    parser.add_argument("--encoder", default="resnet18", help="segmentation-models-pytorch encoder name")
    parser.add_argument("--encoder-weights", default=None,
                        help="pretrained encoder weights, e.g. imagenet (needs a download); default: none")
    parser.add_argument("--decoder-channels", default="128,64,32,16,8",
                        help="U-Net decoder widths, one per encoder level, comma separated")
    parser.add_argument("--epochs", type=int, default=None,
                        help="maximum number of epochs (default 40); with --resume, a new total that also "
                             "resets the length of the cosine schedule")
    parser.add_argument("--batch-size", type=int, default=8, help="images per optimisation step")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    parser.add_argument("--warmup-epochs", type=int, default=2, help="epochs of linear learning-rate warm-up "
                        "before the cosine decay")
    parser.add_argument("--patience", type=int, default=10,
                        help="stop after this many epochs without a better validation mean Dice")
    parser.add_argument("--no-augment", action="store_true", help="train without augmentation")
    parser.add_argument("--flip-probability", type=float, default=0.0,
                        help="probability of a left-right mirror per sample (right and left labels are "
                             "swapped with it); default 0 because PA radiographs are not mirror symmetric")
    add_run_control_arguments(parser)
    return parser


def model_config(args: argparse.Namespace, mask_encoding: str) -> dict:
    channels = decoder_widths(args.decoder_channels)
    return {
        "task": "lung_segmentation",
        "encoder_name": args.encoder,
        "encoder_weights": args.encoder_weights,
        "encoder_depth": len(channels),
        "decoder_channels": channels,
        "in_channels": 1,
        "classes": NUM_CLASSES,
        "input_size": args.input_size,
        "normalisation": "per-image zero mean, unit variance",
        "labels": {"0": "background", "1": "patient-right lung", "2": "patient-left lung"},
        "train_mask_encoding": mask_encoding,
    }


def learning_rate_factor(epoch: int, warmup_epochs: int, total_epochs: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0.01 at the last epoch (0-based epoch)."""
    if epoch < warmup_epochs:
        return (epoch + 1) / (warmup_epochs + 1)
    progress = (epoch - warmup_epochs) / max(1, total_epochs - warmup_epochs)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))


def run_epoch(model, loader, device, optimizer=None, show_progress=True, description="") -> dict:
    """Train (with ``optimizer``) or evaluate for one pass; return mean loss and Dice."""
    training = optimizer is not None
    model.train(training)
    total_loss, count, dice_rows = 0.0, 0, []
    progress = tqdm(loader, desc=description, leave=False, disable=not show_progress)
    with torch.set_grad_enabled(training):
        for images, labels in progress:
            images, labels = images.to(device), labels.to(device)
            logits = model(images)
            loss = dice_ce_loss(logits, labels)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss.item()} in {description}; lower --lr")
            if training:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            total_loss += loss.item() * images.shape[0]
            count += images.shape[0]
            if not training:
                dice_rows.append(batch_dice(logits, labels).cpu())
    result = {"loss": total_loss / max(count, 1)}
    if dice_rows:
        dice = torch.cat(dice_rows).numpy()
        result.update(dice_right=float(dice[:, 0].mean()), dice_left=float(dice[:, 1].mean()),
                      dice_mean=float(dice.mean()))
    return result


def resolve_resume(args: argparse.Namespace, explicit: set[str]) -> tuple[argparse.Namespace, dict | None]:
    """Return the arguments to run with: the command line, or the stored ones when resuming.

    ``explicit`` names the options given on the command line; see ``merge_resumed_arguments``.
    """
    if not args.resume:
        epochs = DEFAULT_EPOCHS if args.epochs is None else args.epochs
        # Absolute paths in run.json and the checkpoint let --resume run from any directory.
        paths = {name: getattr(args, name).resolve() for name in ("data_root", "split")
                 if getattr(args, name) is not None}
        return argparse.Namespace(**{**vars(args), **paths, "epochs": epochs}), None
    return load_resumed_run(args, explicit, RESUME_OVERRIDABLE, RESUME_CHANGEABLE, PATH_ARGUMENTS)


def load_datasets(args: argparse.Namespace, mask_encoding: str):
    """Read the split and every train and val image and mask into memory.

    Raises:
        SystemExit: the split lacks train or val ids.
        FileNotFoundError, ValueError: a file is missing or unreadable, or a mask does not
            fit its image or the mask encoding.
    """
    if not args.data_root.is_dir():
        raise FileNotFoundError(f"--data-root {args.data_root} not found; give the dataset folder with images/ "
                                "and masks/")
    split = read_split(args.split)
    train_ids, val_ids = ids_in(split, "train"), ids_in(split, "val")
    if args.max_images:
        train_ids, val_ids = train_ids[: args.max_images], val_ids[: args.max_images]
    if not train_ids or not val_ids:
        raise SystemExit(f"split {args.split} has {len(train_ids)} train and {len(val_ids)} val ids; both are needed")
    encoding = MaskEncoding.parse(mask_encoding)
    LOGGER.info("loading %d train and %d val images from %s", len(train_ids), len(val_ids), args.data_root)
    train_set = SegmentationDataset(args.data_root, train_ids, args.input_size, encoding,
                                    augment=not args.no_augment, flip_probability=args.flip_probability,
                                    seed=args.seed)
    val_set = SegmentationDataset(args.data_root, val_ids, args.input_size, encoding)
    return train_set, val_set


def check_numbers(args: argparse.Namespace) -> None:
    """Raise ValueError for a size, count or rate that training cannot use."""
    if args.epochs < 1 or args.batch_size < 1 or args.patience < 1:
        raise ValueError(f"--epochs ({args.epochs}), --batch-size ({args.batch_size}) and --patience "
                         f"({args.patience}) must be at least 1")
    if args.warmup_epochs < 0:
        raise ValueError(f"--warmup-epochs {args.warmup_epochs} must be 0 or more")
    check_unet_input_size("--input-size", args.input_size, len(decoder_widths(args.decoder_channels)))
    check_ranges(args, {"lr": (0, math.inf), "weight_decay": (0, math.inf), "flip_probability": (0, 1),
                        "max_minutes": (0, math.inf)})  # --max-minutes 0 stops after the first epoch
    if args.lr == 0:
        raise ValueError("--lr 0.0 must be above 0")


def main(args: argparse.Namespace) -> None:
    args, checkpoint = resolve_resume(args, pop_explicit_options(args))
    if args.data_root is None or args.split is None:
        raise SystemExit("--data-root and --split are required unless --resume is given")
    check_numbers(args)
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    mask_encoding = args.mask_encoding or default_mask_encoding(args.data_root)
    config = model_config(args, mask_encoding)
    seed_everything(args.seed)
    # Every input is read before the output folder is prepared, so a bad split, data root or
    # mask encoding leaves an earlier run, and a new folder, untouched.
    train_set, val_set = load_datasets(args, mask_encoding)
    model = build_unet(config).to(device)  # an unknown --encoder fails here, before any folder
    if checkpoint is None:
        prepare_output_dir(args.output_dir, args.overwrite, resumable=True)
    setup_logging(args.output_dir)
    write_run_record(args.output_dir, vars(args), device, {"model_config": config, "resumed": bool(checkpoint)})

    val_loader = torch.utils.data.DataLoader(val_set, batch_size=args.batch_size, shuffle=False)

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: learning_rate_factor(epoch, args.warmup_epochs, args.epochs)
    )
    start_epoch, best_dice, best_epoch = 1, -1.0, 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model_state"])
        optimizer.load_state_dict(checkpoint["optimizer_state"])
        scheduler.load_state_dict(checkpoint["scheduler_state"])
        restore_rng_state(checkpoint["rng_state"])
        start_epoch = checkpoint["epoch"] + 1
        best_dice, best_epoch = checkpoint["best_metric"], checkpoint["best_epoch"]
        LOGGER.info("resuming after epoch %d (best val Dice %.4f at epoch %d)", checkpoint["epoch"], best_dice,
                    best_epoch)
    metrics = MetricsLog(args.output_dir / "metrics.csv",
                         resume_after_epoch=start_epoch - 1 if checkpoint is not None else 0)

    run_started = time.time()
    for epoch in range(start_epoch, args.epochs + 1):
        if epoch - best_epoch > args.patience and best_epoch > 0:
            LOGGER.info("early stop: no better val Dice for %d epochs (best %.4f at epoch %d)",
                        args.patience, best_dice, best_epoch)
            break
        started = time.time()
        train_set.set_epoch(epoch)
        # The shuffle order depends only on (seed, epoch), so a resumed run draws the same batches.
        generator = torch.Generator().manual_seed(args.seed * 1_000 + epoch)
        train_loader = torch.utils.data.DataLoader(train_set, batch_size=args.batch_size, shuffle=True,
                                                   generator=generator, drop_last=len(train_set) > args.batch_size)
        learning_rate = optimizer.param_groups[0]["lr"]
        train_result = run_epoch(model, train_loader, device, optimizer, not args.no_progress, f"epoch {epoch} train")
        val_result = run_epoch(model, val_loader, device, None, not args.no_progress, f"epoch {epoch} val")
        scheduler.step()

        improved = val_result["dice_mean"] > best_dice
        if improved:
            best_dice, best_epoch = val_result["dice_mean"], epoch
        metrics.append({
            "epoch": epoch, "lr": learning_rate, "train_loss": train_result["loss"], "val_loss": val_result["loss"],
            "val_dice_right": val_result["dice_right"], "val_dice_left": val_result["dice_left"],
            "val_dice_mean": val_result["dice_mean"], "best_epoch": best_epoch,
            "seconds": round(time.time() - started, 1),
        })
        payload = {
            "model_state": model.state_dict(), "model_config": config, "args": to_plain(vars(args)),
            "epoch": epoch, "best_metric": best_dice, "best_metric_name": "val_dice_mean (letterboxed frame)",
            "best_epoch": best_epoch, "optimizer_state": optimizer.state_dict(),
            "scheduler_state": scheduler.state_dict(), "rng_state": rng_state(),
        }
        if improved:
            save_checkpoint(args.output_dir / "best.pt", payload)
        save_checkpoint(args.output_dir / "last.pt", payload)
        plot_curves(args.output_dir / "metrics.csv", args.output_dir / "curves.png",
                    ["train_loss", "val_loss", "val_dice_right", "val_dice_left"])

        if args.max_minutes is not None and time.time() - run_started > 60 * args.max_minutes:
            LOGGER.info("stopping after epoch %d: --max-minutes %.1f reached", epoch, args.max_minutes)
            break

    LOGGER.info("done: best val Dice %.4f at epoch %d; checkpoint %s", best_dice, best_epoch,
                args.output_dir / "best.pt")


if __name__ == "__main__":
    run_script(main, get_args_parser())
