"""Train one stage of the two-stage heatmap model of the hemidiaphragm domes.

Stage 1 (``--stage coarse``) takes the whole input, letterboxed (aspect ratio kept, zero
padding) to ``--input-size`` pixels, and predicts one Gaussian heatmap per dome. Stage 2
(``--stage fine``) takes, for one dome, a window of ``--crop-size-px`` original pixels
resampled to ``--crop-output-size`` pixels. The window is centred on the reference point
plus a random offset of about the error that stage 1 makes, and the network predicts
refined heatmaps.

The input is the lung mask (``--input-mode mask``: patient-right and left lung channels),
the radiograph (``image``) or both (``image+mask``). Masks come from the metadata CSV
(ground truth) or, with ``--mask-index``, from the predicted masks that
``segmentation_test/evaluate.py --export-masks`` wrote.

The validation metric of each epoch is the mean radial error of both domes in original
pixels, decoded exactly as at inference (arg-max in the lung band, sub-pixel refinement,
inverse of the letterbox or crop). With ``--coarse-checkpoint``, stage-2 validation crops
are centred on that stage 1's predictions, so the metric is the two-stage error.

Reads:  the metadata CSV (image and mask paths, dome points, part), optionally a split
        file, a masks_index.csv and, for stage 2, a stage-1 checkpoint.
Writes: <output-dir>/run.json, train.log, metrics.csv (one row per epoch), curves.png,
        last.pt and best.pt (best validation mean radial error).

Example:
    python heatmap_train/train.py --stage coarse --metadata runs/jsrt224_metadata.csv \
        --split data_splits/jsrt224/fold0.csv --output-dir runs/heatmap/jsrt224_mask_coarse
    python heatmap_train/train.py --stage fine --metadata runs/jsrt224_metadata.csv \
        --split data_splits/jsrt224/fold0.csv --coarse-checkpoint runs/heatmap/jsrt224_mask_coarse/best.pt \
        --output-dir runs/heatmap/jsrt224_mask_fine
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from hemidiaphragm.checkpoint import (
    load_checkpoint,
    load_resumed_run,
    restore_rng_state,
    rng_state,
    save_checkpoint,
    to_plain,
)
from hemidiaphragm.geometry import Crop, Letterbox
from hemidiaphragm.heatmap_model import (
    LOSSES,
    TASK,
    TwoStagePredictor,
    band_radius_px,
    decode_coarse,
    decode_fine,
    heatmap_loss,
    load_heatmap_stage,
    lung_presence,
)
from hemidiaphragm.heatmaps import LANDMARKS
from hemidiaphragm.landmark_data import (
    INPUT_MODES,
    Augmentation,
    CoarseDataset,
    FineDataset,
    input_channel_names,
    load_landmark_table,
    load_samples,
    select_part,
)
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

LOGGER = logging.getLogger("heatmap_train")

# Flags that may differ between the interrupted and the resumed invocation.
# The output folder is always the one given, so a copied or moved run resumes in place.
RESUME_OVERRIDABLE = ("device", "resume", "no_progress", "threads", "max_minutes", "output_dir")
# Flags that a resumed invocation may change only when given explicitly; changing them
# means the resumed run no longer ends where the uninterrupted one would. Any other flag
# given with a value that differs from the stored one stops the resume with an error.
RESUME_CHANGEABLE = ("epochs",)
PATH_ARGUMENTS = ("metadata", "split", "mask_index", "output_dir", "coarse_checkpoint")
# Flags that only one stage reads; giving one to the other stage is an error.
STAGE_ONLY_ARGUMENTS = {
    "coarse": ("input_size",),
    "fine": ("crop_size_px", "crop_output_size", "coarse_checkpoint", "jitter_px", "repeats"),
}


def get_args_parser() -> argparse.ArgumentParser:
    parser = RunArgumentParser(description="Train stage 1 (coarse) or stage 2 (fine) of the dome heatmap model.")
    parser.add_argument("--stage", choices=("coarse", "fine"), default=None,
                        help="coarse: whole letterboxed input; fine: crops around each dome (required unless "
                             "--resume is given)")
    parser.add_argument("--metadata", type=Path, default=None,
                        help="metadata CSV (image_path, mask_path, mask_encoding, dome points in original pixels, "
                             "part); required unless --resume is given")
    parser.add_argument("--split", type=Path, default=None,
                        help="split CSV (image_id, patient_id, part) whose parts replace the metadata's part column")
    parser.add_argument("--mask-index", type=Path, default=None,
                        help="masks_index.csv of exported predicted masks (labels 1/2) to use instead of the "
                             "metadata's masks; it must list every train and val image")
    parser.add_argument("--output-dir", type=Path, required=True, help="new folder for this run's files")
    parser.add_argument("--input-mode", choices=tuple(INPUT_MODES), default="mask",
                        help="network input: mask (right and left lung channels), image, or image+mask")

    group = parser.add_argument_group("stage 1 (coarse)")
    group.add_argument("--input-size", type=int, default=64,
                       help="side of the letterboxed square input and heatmap, in pixels")
    group = parser.add_argument_group("stage 2 (fine)")
    group.add_argument("--crop-size-px", type=float, default=64.0,
                       help="side of the crop window in original pixels (about 64 for 224-pixel images, "
                            "128 for 512-pixel ones)")
    group.add_argument("--crop-output-size", type=int, default=64,
                       help="side of the resampled crop and of its heatmap, in pixels")
    group.add_argument("--coarse-checkpoint", type=Path, default=None,
                       help="stage-1 best.pt: sets the default --jitter-px and centres the validation crops "
                            "on its predictions")
    group.add_argument("--jitter-px", type=float, default=None,
                       help="standard deviation per axis of the random crop-centre offset, in original pixels; "
                            "default: the stage-1 checkpoint's best validation mean radial error")
    group.add_argument("--repeats", type=int, default=2,
                       help="crops per dome and training image in one epoch, each with its own offset")

    group = parser.add_argument_group("targets, network and loss")
    group.add_argument("--sigma-px", type=float, default=1.5,
                       help="standard deviation of the Gaussian targets in heatmap pixels")
    group.add_argument("--loss", choices=LOSSES, default="mse",
                       help="mse, or adaptive_wing (weights the foreground around each peak)")
    group.add_argument("--encoder", default="mobilenet_v2", help="segmentation-models-pytorch encoder name")
    group.add_argument("--decoder-channels", default="64,32,16,8",
                       help="U-Net decoder widths, one per encoder level used, comma separated")
    group.add_argument("--band-radius-512", type=float, default=20.0,
                       help="radius of the band around each lung's lower border that decoding searches, in "
                            "pixels of the 512 frame (original pixels x 512 / max(width, height))")
    group.add_argument("--min-peak", type=float, default=0.3,
                       help="heatmap peak value below which a point is flagged low_peak (targets peak at 1)")

    group = parser.add_argument_group("optimisation")
    group.add_argument("--epochs", type=int, default=60,
                       help="maximum number of epochs; with --resume, a new total that also resets the length of "
                            "the cosine schedule")
    group.add_argument("--batch-size", type=int, default=8, help="samples per optimisation step")
    group.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate")
    group.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    group.add_argument("--warmup-epochs", type=int, default=2,
                       help="epochs of linear learning-rate warm-up before the cosine decay")
    group.add_argument("--patience", type=int, default=15,
                       help="stop after this many epochs without a lower validation mean radial error")
    group.add_argument("--no-augment", action="store_true", help="train without augmentation")
    group.add_argument("--rotation-deg", type=float, default=6.0, help="maximum random rotation, degrees")
    group.add_argument("--scale-range", type=float, default=0.06,
                       help="random zoom drawn from [1 - range, 1 + range]")
    group.add_argument("--shift-fraction", type=float, default=0.04,
                       help="maximum random shift per axis as a fraction of the network input side")
    group.add_argument("--flip-probability", type=float, default=0.0,
                       help="probability of a left-right mirror per sample, which swaps the right and left "
                            "lung channels and dome channels; default 0 because radiographs are not mirror "
                            "symmetric (heart on the patient's left)")

    group.add_argument("--mask-noise-px", type=float, default=0.0,
                       help="standard deviation, in original pixels, of a smooth random displacement of the training "
                            "masks that imitates segmentation errors; 0 (default) keeps the masks exact")

    group = parser.add_argument_group("run control")
    add_run_control_arguments(group, seed_help="seed of weights, data order, offsets and augmentation")
    return parser


def model_config(args: argparse.Namespace, jitter_px: float | None) -> dict:
    channels = decoder_widths(args.decoder_channels)
    config = {
        "task": TASK,
        "stage": args.stage,
        "encoder_name": args.encoder,
        "encoder_weights": None,
        "encoder_depth": len(channels),
        "decoder_channels": channels,
        "in_channels": len(input_channel_names(args.input_mode)),
        "classes": len(LANDMARKS),
        "input_mode": args.input_mode,
        "input_channels": list(input_channel_names(args.input_mode)),
        "landmarks": list(LANDMARKS),
        "sigma_px": args.sigma_px,
        "heatmap_stride": 1,
        "normalisation": "radiograph standardised to zero mean, unit variance; lung channels 0..1",
        "band_radius_512": args.band_radius_512,
        "min_peak": args.min_peak,
        "loss": args.loss,
    }
    if args.stage == "coarse":
        config["input_size"] = args.input_size
    else:
        config.update(crop_size_px=args.crop_size_px, crop_output_size=args.crop_output_size, jitter_px=jitter_px)
    return config


def learning_rate_factor(epoch: int, warmup_epochs: int, total_epochs: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0.01 at the last epoch (0-based epoch)."""
    if epoch < warmup_epochs:
        return (epoch + 1) / (warmup_epochs + 1)
    progress = (epoch - warmup_epochs) / max(1, total_epochs - warmup_epochs)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))


def augmentation_from_args(args: argparse.Namespace) -> Augmentation:
    return Augmentation(
        enabled=not args.no_augment, rotation_deg=args.rotation_deg, scale=args.scale_range,
        shift_fraction=args.shift_fraction, flip_probability=args.flip_probability,
        # Runs stored before --mask-noise-px existed resume without it.
        mask_noise_px=getattr(args, "mask_noise_px", 0.0),
    )


def train_epoch(model, loader, optimizer, loss_name: str, device: str, show_progress: bool, description: str) -> float:
    model.train()
    total, count = 0.0, 0
    for batch in tqdm(loader, desc=description, leave=False, disable=not show_progress):
        inputs, targets = batch[0].to(device), batch[1].to(device)
        loss = heatmap_loss(loss_name, model(inputs), targets)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} in {description}; lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * inputs.shape[0]
        count += inputs.shape[0]
    return total / max(count, 1)


@torch.no_grad()
def validate_coarse(model, dataset: CoarseDataset, args, device: str) -> dict:
    """Decode every validation image as inference does; return loss and radial errors (original px)."""
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=False)
    total_loss, errors = 0.0, []
    for inputs, targets, indices in loader:
        heatmaps = model(inputs.to(device))
        total_loss += heatmap_loss(args.loss, heatmaps, targets.to(device)).item() * inputs.shape[0]
        for heatmap, index in zip(heatmaps.cpu().numpy(), indices.tolist()):
            sample = dataset.samples[index]
            box = Letterbox.fit(sample.height, sample.width, args.input_size)
            radius = band_radius_px(args.band_radius_512, sample.height, sample.width)
            decoded = decode_coarse(heatmap, box, sample.lung_bands(radius), lung_presence(sample.labels),
                                    args.min_peak)
            errors.append(np.linalg.norm(decoded.xy - sample.points_xy, axis=1))
    return summarise_validation(total_loss / len(dataset), np.array(errors), dataset.samples)


@torch.no_grad()
def validate_fine(model, dataset: FineDataset, args, device: str) -> dict:
    """Decode every validation crop's own dome channel; return loss and radial errors (original px)."""
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=False)
    total_loss = 0.0
    errors = np.full((len(dataset.samples), len(LANDMARKS)), np.nan)
    for inputs, targets, landmarks, centres, indices in loader:
        heatmaps = model(inputs.to(device))
        total_loss += heatmap_loss(args.loss, heatmaps, targets.to(device)).item() * inputs.shape[0]
        for heatmap, landmark, centre, index in zip(heatmaps.cpu().numpy(), landmarks.tolist(),
                                                    centres.numpy(), indices.tolist()):
            sample_index, _ = dataset.items[index]
            sample = dataset.samples[sample_index]
            crop = Crop(float(centre[0]), float(centre[1]), args.crop_size_px, args.crop_output_size)
            radius = band_radius_px(args.band_radius_512, sample.height, sample.width)
            bands = sample.lung_bands(radius)
            xy, _, _ = decode_fine(heatmap[landmark], crop, None if bands is None else bands[landmark],
                                   lung_presence(sample.labels)[landmark], args.min_peak)
            errors[sample_index, landmark] = np.linalg.norm(xy - sample.points_xy[landmark])
    return summarise_validation(total_loss / len(dataset), errors, dataset.samples)


def summarise_validation(loss: float, errors: np.ndarray, samples) -> dict:
    """Mean radial errors in original pixels and in the 512 frame; ``errors`` is (N, K)."""
    frame_scale = np.array([512 / max(s.height, s.width) for s in samples])[:, None]
    return {
        "loss": loss,
        "mre_px": float(errors.mean()),
        "mre_right_px": float(errors[:, 0].mean()),
        "mre_left_px": float(errors[:, 1].mean()),
        "mre_512": float((errors * frame_scale).mean()),
    }


def stage1_centres(checkpoint_path: Path, samples, device: str) -> np.ndarray:
    """Return the (N, K, 2) stage-1 predictions, in original pixels, for ``samples``."""
    predictor = TwoStagePredictor(load_heatmap_stage(checkpoint_path, device, expected_stage="coarse"))
    centres = []
    for sample in samples:
        centres.append(predictor.predict(sample.pixels, sample.labels).stage1.xy)
    return np.array(centres)


def resolve_resume(args: argparse.Namespace, explicit: set[str]) -> tuple[argparse.Namespace, dict | None]:
    """Return the arguments to run with: the command line, or the stored ones when resuming.

    ``explicit`` names the options given on the command line; see ``merge_resumed_arguments``.
    """
    if not args.resume:
        if args.stage is None or args.metadata is None:
            raise SystemExit("--stage and --metadata are required unless --resume is given")
        check_stage_arguments(args.stage, explicit)
        # Absolute paths in run.json and the checkpoint let --resume run from any directory.
        paths = {name: getattr(args, name).resolve() for name in PATH_ARGUMENTS
                 if name != "output_dir" and getattr(args, name) is not None}
        return argparse.Namespace(**{**vars(args), **paths}), None
    return load_resumed_run(args, explicit, RESUME_OVERRIDABLE, RESUME_CHANGEABLE, PATH_ARGUMENTS)


def check_stage_arguments(stage: str, explicit: set[str]) -> None:
    """Raise SystemExit when a flag of the other stage is given, because this stage would ignore it."""
    for other, names in STAGE_ONLY_ARGUMENTS.items():
        misplaced_flags = ["--" + name.replace("_", "-") for name in names if other != stage and name in explicit]
        if misplaced_flags:
            verb = "applies" if len(misplaced_flags) == 1 else "apply"
            raise SystemExit(f"{', '.join(misplaced_flags)} only {verb} to --stage {other}, but --stage {stage} "
                             "was given; leave them out or train the other stage")


def check_numbers(args: argparse.Namespace) -> None:
    """Raise ValueError for a size, count or rate that training cannot use."""
    if min(args.epochs, args.batch_size, args.patience, args.repeats) < 1:
        raise ValueError(f"--epochs ({args.epochs}), --batch-size ({args.batch_size}), --patience ({args.patience}) "
                         f"and --repeats ({args.repeats}) must be at least 1")
    check_ranges(args, {
        "sigma_px": (0, math.inf), "crop_size_px": (0, math.inf), "lr": (0, math.inf), "band_radius_512": (0, math.inf),
        "weight_decay": (0, math.inf), "warmup_epochs": (0, math.inf), "max_minutes": (0, math.inf),
        "jitter_px": (0, math.inf), "min_peak": (0, 1), "mask_noise_px": (0, math.inf), "scale_range": (0, 0.9),
        "rotation_deg": (0, 180), "shift_fraction": (0, 0.5), "flip_probability": (0, 1),
    })
    if min(args.sigma_px, args.crop_size_px, args.lr, args.band_radius_512) == 0:
        raise ValueError(f"--sigma-px ({args.sigma_px}), --crop-size-px ({args.crop_size_px}), --lr ({args.lr}) and "
                         f"--band-radius-512 ({args.band_radius_512}) must be above 0")
    depth = len(decoder_widths(args.decoder_channels))
    check_unet_input_size("--input-size", args.input_size, depth)
    check_unet_input_size("--crop-output-size", args.crop_output_size, depth)


def resolve_jitter(args: argparse.Namespace) -> float | None:
    """Return the stage-2 offset sigma in original pixels (None for stage 1)."""
    if args.stage != "fine":
        return None
    if args.jitter_px is not None:
        if args.jitter_px < 0:
            raise ValueError(f"--jitter-px {args.jitter_px}: must be zero or positive")
        return float(args.jitter_px)
    if args.coarse_checkpoint is None:
        raise SystemExit("stage 2 needs --jitter-px or a --coarse-checkpoint whose validation error sets it")
    coarse = load_checkpoint(args.coarse_checkpoint)
    if coarse["model_config"].get("stage") != "coarse":
        raise SystemExit(f"--coarse-checkpoint {args.coarse_checkpoint} is not a stage-1 (coarse) checkpoint")
    # The mean radial error of an isotropic Gaussian error is about 1.25 per-axis sigmas, so
    # using the error itself as sigma trains on slightly wider offsets than stage 1 makes.
    return float(coarse["best_metric"])


def build_datasets(args: argparse.Namespace, jitter_px: float | None, device: str):
    table = load_landmark_table(args.metadata, args.split, args.mask_index)
    train_rows = select_part(table, "train", str(args.metadata))
    val_rows = select_part(table, "val", str(args.metadata))
    if args.max_images:
        train_rows, val_rows = train_rows.head(args.max_images), val_rows.head(args.max_images)
    LOGGER.info("loading %d train and %d val images from %s", len(train_rows), len(val_rows), args.metadata)
    # Stage-2 validation with a stage-1 checkpoint also needs whatever that checkpoint reads.
    val_mode = args.input_mode
    if args.stage == "fine" and args.coarse_checkpoint is not None:
        val_mode = combined_mode(args.input_mode, load_checkpoint(args.coarse_checkpoint)["model_config"]["input_mode"])
    train_samples = load_samples(train_rows, args.input_mode, f"{args.metadata} (train part)")
    val_samples = load_samples(val_rows, val_mode, f"{args.metadata} (val part)")
    augmentation = augmentation_from_args(args)

    if args.stage == "coarse":
        train_set = CoarseDataset(train_samples, args.input_mode, args.input_size, args.sigma_px, augmentation,
                                  seed=args.seed)
        val_set = CoarseDataset(val_samples, args.input_mode, args.input_size, args.sigma_px)
        return train_set, val_set

    centres = None
    if args.coarse_checkpoint is not None:
        centres = stage1_centres(args.coarse_checkpoint, val_samples, device)
        errors = np.linalg.norm(centres - np.stack([s.points_xy for s in val_samples]), axis=2)
        LOGGER.info("stage-1 validation mean radial error %.3f px; stage-2 crops are centred on its points",
                    errors.mean())
    train_set = FineDataset(train_samples, args.input_mode, args.crop_size_px, args.crop_output_size, args.sigma_px,
                            jitter_px, augmentation, repeats=args.repeats, seed=args.seed)
    val_set = FineDataset(val_samples, args.input_mode, args.crop_size_px, args.crop_output_size, args.sigma_px,
                          jitter_px, seed=args.seed + 1, fixed_offsets=True, centres_xy=centres)
    return train_set, val_set


def combined_mode(first: str, second: str) -> str:
    """Return the input mode that reads everything either of two modes reads."""
    names = set(input_channel_names(first)) | set(input_channel_names(second))
    if "image" in names and "right_lung" in names:
        return "image+mask"
    return "image" if "image" in names else "mask"


def main(args: argparse.Namespace) -> None:
    args, checkpoint = resolve_resume(args, pop_explicit_options(args))
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    check_numbers(args)
    jitter_px = resolve_jitter(args)
    config = model_config(args, jitter_px)
    seed_everything(args.seed)
    if jitter_px is not None:
        LOGGER.info("stage-2 crop-centre offsets: sigma %.3f original px per axis", jitter_px)
    # Every input is read before the output folder is prepared, so a missing metadata file or
    # checkpoint leaves an earlier run, and a new folder, untouched.
    train_set, val_set = build_datasets(args, jitter_px, device)
    model = build_unet(config).to(device)  # an unknown --encoder fails here, before any folder
    if checkpoint is None:
        prepare_output_dir(args.output_dir, args.overwrite, resumable=True)
    setup_logging(args.output_dir)
    write_run_record(args.output_dir, vars(args), device, {"model_config": config, "resumed": bool(checkpoint)})

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: learning_rate_factor(epoch, args.warmup_epochs, args.epochs)
    )
    start_epoch, best_error, best_epoch = 1, math.inf, 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model_state"])
        optimizer.load_state_dict(checkpoint["optimizer_state"])
        scheduler.load_state_dict(checkpoint["scheduler_state"])
        restore_rng_state(checkpoint["rng_state"])
        start_epoch = checkpoint["epoch"] + 1
        best_error, best_epoch = checkpoint["best_metric"], checkpoint["best_epoch"]
        LOGGER.info("resuming after epoch %d (best val mean radial error %.3f px at epoch %d)",
                    checkpoint["epoch"], best_error, best_epoch)
    metrics = MetricsLog(args.output_dir / "metrics.csv",
                         resume_after_epoch=start_epoch - 1 if checkpoint is not None else 0)
    validate = validate_coarse if args.stage == "coarse" else validate_fine

    run_started = time.time()
    for epoch in range(start_epoch, args.epochs + 1):
        if best_epoch > 0 and epoch - best_epoch > args.patience:
            LOGGER.info("early stop: no lower val mean radial error for %d epochs (best %.3f px at epoch %d)",
                        args.patience, best_error, best_epoch)
            break
        started = time.time()
        train_set.set_epoch(epoch)
        # The shuffle order depends only on (seed, epoch), so a resumed run draws the same batches.
        generator = torch.Generator().manual_seed(args.seed * 1_000 + epoch)
        train_loader = torch.utils.data.DataLoader(train_set, batch_size=args.batch_size, shuffle=True,
                                                   generator=generator, drop_last=len(train_set) > args.batch_size)
        learning_rate = optimizer.param_groups[0]["lr"]
        train_loss = train_epoch(model, train_loader, optimizer, args.loss, device, not args.no_progress,
                                 f"epoch {epoch} train")
        result = validate(model, val_set, args, device)
        scheduler.step()

        improved = result["mre_px"] < best_error
        if improved:
            best_error, best_epoch = result["mre_px"], epoch
        metrics.append({
            "epoch": epoch, "lr": learning_rate, "train_loss": train_loss, "val_loss": result["loss"],
            "val_mre_px": result["mre_px"], "val_mre_right_px": result["mre_right_px"],
            "val_mre_left_px": result["mre_left_px"], "val_mre_512": result["mre_512"], "best_epoch": best_epoch,
            "seconds": round(time.time() - started, 1),
        })
        payload = {
            "model_state": model.state_dict(), "model_config": config, "args": to_plain(vars(args)),
            "epoch": epoch, "best_metric": best_error,
            "best_metric_name": "val_mre_px (mean radial error of both domes, original pixels)",
            "best_epoch": best_epoch, "optimizer_state": optimizer.state_dict(),
            "scheduler_state": scheduler.state_dict(), "rng_state": rng_state(),
        }
        if improved:
            save_checkpoint(args.output_dir / "best.pt", payload)
        save_checkpoint(args.output_dir / "last.pt", payload)
        plot_curves(args.output_dir / "metrics.csv", args.output_dir / "curves.png",
                    ["train_loss", "val_loss", "val_mre_px"])

        if args.max_minutes is not None and time.time() - run_started > 60 * args.max_minutes:
            LOGGER.info("stopping after epoch %d: --max-minutes %.1f reached", epoch, args.max_minutes)
            break

    LOGGER.info("done in %.1f min: best val mean radial error %.3f px at epoch %d; checkpoint %s",
                (time.time() - run_started) / 60, best_error, best_epoch, args.output_dir / "best.pt")


if __name__ == "__main__":
    run_script(main, get_args_parser())
