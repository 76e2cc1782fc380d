"""Benchmark: seconds per image of the whole prediction path, phase by phase.

Times, for each image: reading, lung segmentation (network and mapping back to the
original size), post-processing, and both heatmap stages with decoding. Prints a table of
mean and median milliseconds per phase and the total, plus the peak resident memory.
The first ``--warmup`` images are run but not timed.

Example:
    python benchmarks/inference_speed.py --images ../shared/data/jsrt224/images --count 30 \
        --seg-checkpoint runs/seg/jsrt224_fold0/best.pt \
        --coarse-checkpoint runs/heatmap/jsrt224_coarse/best.pt \
        --fine-checkpoint runs/heatmap/jsrt224_fine/best.pt --threads 2
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import torch

from hemidiaphragm.datasets import find_file, list_image_ids
from hemidiaphragm.heatmap_model import TwoStagePredictor, load_heatmap_stage
from hemidiaphragm.imaging import read_image
from hemidiaphragm.postprocess import parse_steps, postprocess
from hemidiaphragm.runs import positive_int, resolve_device, run_script
from hemidiaphragm.segmentation import load_segmenter


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Time the prediction path per image.")
    parser.add_argument("--images", type=Path, required=True, help="folder of radiographs")
    parser.add_argument("--count", type=positive_int, default=30, help="number of images to time")
    parser.add_argument("--warmup", type=int, default=3, help="images run before timing starts")
    parser.add_argument("--seg-checkpoint", type=Path, required=True, help="segmentation best.pt")
    parser.add_argument("--postprocess", default="largest,fill", help="post-processing steps, or 'none'")
    parser.add_argument("--coarse-checkpoint", type=Path, default=None, help="stage-1 best.pt (optional)")
    parser.add_argument("--fine-checkpoint", type=Path, default=None, help="stage-2 best.pt (optional)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda[:N] or auto")
    parser.add_argument("--threads", type=positive_int, default=2, help="CPU threads for torch")
    return parser


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    segmenter = load_segmenter(args.seg_checkpoint, device)
    steps = parse_steps(args.postprocess)
    predictor = None
    if args.coarse_checkpoint is not None:
        coarse = load_heatmap_stage(args.coarse_checkpoint, device, expected_stage="coarse")
        fine = load_heatmap_stage(args.fine_checkpoint, device, expected_stage="fine") if args.fine_checkpoint else None
        predictor = TwoStagePredictor(coarse, fine)

    image_ids = list_image_ids(args.images)[: args.warmup + args.count]
    timings: dict[str, list[float]] = {"read": [], "segment": [], "postprocess": [], "landmarks": [], "total": []}
    for index, image_id in enumerate(image_ids):
        started = time.perf_counter()
        radiograph = read_image(find_file(args.images, image_id))
        read_done = time.perf_counter()
        raw = segmenter.predict(radiograph.pixels)
        segment_done = time.perf_counter()
        labels = postprocess(raw, steps)
        post_done = time.perf_counter()
        if predictor is not None:
            predictor.predict(radiograph.pixels, labels)
        landmarks_done = time.perf_counter()
        if index < args.warmup:
            continue
        timings["read"].append(read_done - started)
        timings["segment"].append(segment_done - read_done)
        timings["postprocess"].append(post_done - segment_done)
        timings["landmarks"].append(landmarks_done - post_done)
        timings["total"].append(landmarks_done - started)

    size = f"{radiograph.original_width}x{radiograph.original_height}"
    print(f"{len(timings['total'])} images of {size} from {args.images}, device {device}, "
          f"{torch.get_num_threads()} torch threads")
    print(f"{'phase':<12} {'mean ms':>9} {'median ms':>10}")
    for phase, values in timings.items():
        if phase == "landmarks" and predictor is None:
            continue
        milliseconds = np.array(values) * 1000
        print(f"{phase:<12} {milliseconds.mean():9.1f} {np.median(milliseconds):10.1f}")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    run_script(main, get_args_parser())
