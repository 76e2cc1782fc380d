#!/usr/bin/env bash
# Run every stage of the project in order, from a prepared dataset to a results folder
# with report.md. Each command is printed before it runs and appended to
# <output-dir>/commands.sh, and the first failing command stops the run.
#
#   bash pipeline.sh --data synthetic --output-dir results/synthetic
#   bash pipeline.sh --data ../shared/data/jsrt224 --output-dir results/jsrt224 --fold 0
#
# --data synthetic first generates the SYNTHETIC demo set (hemidiaphragm/synthetic.py)
# into <output-dir>/data, makes 5-fold splits for it and trains small networks for a few
# epochs, so the whole run takes minutes on a CPU. A dataset folder in the standard
# layout (images/, masks/, landmarks.csv) gets the stage scripts' defaults and the
# committed splits data_splits/<folder name>/fold<k>.csv when they exist.
#
# Steps and their folders under <output-dir>:
#   splits/                   data_splits/make_splits.py (only when no committed splits)
#   segmentation/train/       segmentation_train/train.py
#   segmentation/test/        segmentation_test/evaluate.py on the test part, with the
#                             post-processed masks exported (masks/, masks_index.csv)
#   metadata/                 heatmap_preprocessing/build_metadata.py (reference points
#                             from landmarks.csv, ground-truth masks for training)
#   heatmap/mask_coarse/      heatmap_train/train.py --stage coarse (stage 1)
#   heatmap/mask_fine/        heatmap_train/train.py --stage fine (stage 2)
#   heatmap/predict_mask/     heatmap_test/predict.py on the test part, predicted masks
#   heatmap/evaluate/         heatmap_test/evaluate.py: two-stage, stage 1 and the
#                             geometric baseline on the same predicted masks
#   baseline/                 heatmap_preprocessing/derive_landmarks.py: the geometric
#                             rule's six points on the predicted test masks
#   report.md                 tools/make_report.py
# With --ablations: heatmap/{image,image_mask}_{coarse,fine}/, heatmap/predict_{image,
# image_mask}/ and heatmap/predict_mask_raw/ (masks without post-processing), all scored
# in heatmap/evaluate/.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bash pipeline.sh --data synthetic|DIR --output-dir DIR [options]

  --data synthetic|DIR     'synthetic' (generate the demo set) or a dataset folder with
                           images/, masks/ and landmarks.csv
  --output-dir DIR         results folder; must be empty or missing unless --resume/--overwrite
  --fold K                 fold of the split files to run (default 0)
  --split FILE             split CSV to use instead of data_splits/<name>/fold<K>.csv
  --landmarks FILE         reference points (default DATA/landmarks.csv)
  --mask-encoding ENC      ground-truth mask encoding, 'labels:R,L' or 'combined'
                           (default: the dataset preset, see hemidiaphragm/datasets.py)
  --pixel-spacing-mm MM    isotropic pixel size of the images in mm (default: 1.6 for
                           jsrt224, else read from DICOM/JSRT files by build_metadata.py
                           or unknown)
  --crop-size-px PX        stage-2 crop side in original pixels (default 64; 128 for
                           shenzhen512)
  --ablations              also train the image and image+mask inputs and score masks
                           without post-processing
  --quick                  smoke-test sizes: tiny networks, 4-6 epochs (synthetic: 20 images)
  --device DEV             auto, cpu or cuda[:N] (default auto)
  --threads N              CPU threads for torch in every stage (default: 1 for synthetic,
                           else torch's choice)
  --resume                 skip finished steps, continue interrupted training from last.pt
  --overwrite              rerun every step, replacing earlier outputs in --output-dir
EOF
}

DATA=""
OUT=""
FOLD=0
SPLIT=""
LANDMARKS=""
MASK_ENCODING=""
PIXEL_SPACING_MM=""
CROP_SIZE_PX=""
ABLATIONS=0
QUICK=0
DEVICE="auto"
THREADS=""
RESUME=0
OVERWRITE=0

# Exit with a usage error when option $1 has no value: it is the last argument, or the
# next argument is another option.
need_value() {
    if [[ $# -lt 2 || -z "$2" || "$2" == --* ]]; then
        echo "pipeline.sh: $1 needs a value" >&2
        usage >&2
        exit 2
    fi
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --data|--output-dir|--fold|--split|--landmarks|--mask-encoding|--pixel-spacing-mm|--crop-size-px|\
        --device|--threads)
            need_value "$@" ;;
    esac
    case "$1" in
        --data) DATA="$2"; shift 2 ;;
        --output-dir) OUT="$2"; shift 2 ;;
        --fold) FOLD="$2"; shift 2 ;;
        --split) SPLIT="$2"; shift 2 ;;
        --landmarks) LANDMARKS="$2"; shift 2 ;;
        --mask-encoding) MASK_ENCODING="$2"; shift 2 ;;
        --pixel-spacing-mm) PIXEL_SPACING_MM="$2"; shift 2 ;;
        --crop-size-px) CROP_SIZE_PX="$2"; shift 2 ;;
        --ablations) ABLATIONS=1; shift ;;
        --quick) QUICK=1; shift ;;
        --device) DEVICE="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        --resume) RESUME=1; shift ;;
        --overwrite) OVERWRITE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "pipeline.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done

fail() {
    echo "pipeline.sh: $*" >&2
    exit 1
}

[[ -n "$DATA" ]] || fail "--data is missing: give 'synthetic' or a dataset folder"
[[ -n "$OUT" ]] || fail "--output-dir is missing"
[[ "$FOLD" =~ ^[0-9]+$ ]] || fail "--fold '$FOLD' is not a whole number"
[[ -z "$THREADS" || "$THREADS" =~ ^[1-9][0-9]*$ ]] || fail "--threads '$THREADS' is not a positive whole number"
if ((RESUME && OVERWRITE)); then
    fail "--resume and --overwrite exclude each other: --resume keeps finished steps, --overwrite redoes them"
fi
if [[ -d "$OUT" && -n "$(ls -A "$OUT")" ]] && ((!RESUME && !OVERWRITE)); then
    fail "$OUT already contains files from an earlier run; pass --resume to continue it, --overwrite to replace it, or choose another --output-dir"
fi

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -x "$REPO/.venv/bin/python" ]]; then
    PY="$REPO/.venv/bin/python"
else
    PY="python"
fi

# The inputs are checked before the output folder is made, so a wrong --data, --landmarks,
# --split or --fold leaves no folder behind.
if [[ "$DATA" == synthetic ]]; then
    DATASET_NAME="synthetic"
else
    [[ -d "$DATA" ]] || fail "dataset folder $DATA not found; give 'synthetic' or a folder with images/, masks/ and landmarks.csv"
    DATA_ROOT="$(cd "$DATA" && pwd)"
    DATASET_NAME="$(basename "$DATA_ROOT")"
    LANDMARKS="${LANDMARKS:-$DATA_ROOT/landmarks.csv}"
    [[ -f "$LANDMARKS" ]] \
        || fail "reference points $LANDMARKS not found; pass --landmarks FILE (wide layout: image_id, right_dome_x, ...)"
fi
# Splits made by this script (no committed ones for the dataset) have this many folds.
MADE_FOLDS=5
if [[ -n "$SPLIT" ]]; then
    [[ -f "$SPLIT" ]] || fail "split file $SPLIT not found"
elif [[ ! -f "$REPO/data_splits/$DATASET_NAME/fold$FOLD.csv" ]] && ((10#$FOLD >= MADE_FOLDS)); then
    fail "--fold $FOLD: there is no data_splits/$DATASET_NAME/fold$FOLD.csv, and the splits this script makes have folds 0 to $((MADE_FOLDS - 1)); choose one of those or pass --split FILE"
fi

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
DONE="$OUT/.done"
mkdir -p "$DONE"
COMMANDS="$OUT/commands.sh"
if ((!RESUME)); then : > "$COMMANDS"; fi
((OVERWRITE)) && rm -f "$DONE"/*

# Print a command in a form that can be pasted into a shell, and record it. Arguments
# with characters outside a safe set are single-quoted.
show() {
    local line="" argument
    for argument in "$@"; do
        if [[ "$argument" =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then
            line+="$argument "
        else
            line+="'${argument//\'/\'\\\'\'}' "
        fi
    done
    echo "+ ${line% }" >&2
    echo "${line% }" >> "$COMMANDS"
}

# run_step NAME OUTPUT_FOLDER KIND COMMAND...
# Skips a step that finished in an earlier invocation (marker file .done/NAME). A step
# whose folder exists but never finished is rerun with --overwrite, or, for training
# (KIND=train) with a last.pt, continued with --resume.
run_step() {
    local name="$1" folder="$2" kind="$3"
    shift 3
    local extra=()
    if [[ -e "$DONE/$name" ]]; then
        echo "# $name: finished in an earlier run, skipped ($folder)" >&2
        return 0
    fi
    if [[ -n "$folder" && -d "$folder" && -n "$(ls -A "$folder")" ]]; then
        if [[ "$kind" == train && -f "$folder/last.pt" ]] && ((RESUME)); then
            extra=(--resume)
        else
            extra=(--overwrite)
        fi
    fi
    show "$@" "${extra[@]}"
    "$@" "${extra[@]}"
    touch "$DONE/$name"
}

# The demo's networks are so small that a second CPU thread gains little, and threads
# that wait for each other slow down badly on a machine busy with other work.
if [[ -z "$THREADS" && "$DATA" == synthetic ]]; then
    THREADS=1
fi
TORCH_FLAGS=(--device "$DEVICE" --no-progress)
[[ -n "$THREADS" ]] && TORCH_FLAGS+=(--threads "$THREADS")

# ---------------------------------------------------------------------------------------
# Data and splits.

if [[ "$DATA" == synthetic ]]; then
    DATA_ROOT="$OUT/data"
    SYNTHETIC_COUNT=60
    ((QUICK)) && SYNTHETIC_COUNT=20
    run_step synthetic "$DATA_ROOT" data \
        "$PY" -m hemidiaphragm.synthetic --output-dir "$DATA_ROOT" --count "$SYNTHETIC_COUNT" --size 256 --seed 0
    LANDMARKS="${LANDMARKS:-$DATA_ROOT/landmarks.csv}"
fi

if [[ -z "$SPLIT" ]]; then
    if [[ -f "$REPO/data_splits/$DATASET_NAME/fold$FOLD.csv" ]]; then
        SPLIT="$REPO/data_splits/$DATASET_NAME/fold$FOLD.csv"
    else
        run_step splits "$OUT/splits" data \
            "$PY" "$REPO/data_splits/make_splits.py" --data-root "$DATA_ROOT" --output-dir "$OUT/splits" \
            --folds "$MADE_FOLDS" --seed 2026
        SPLIT="$OUT/splits/fold$FOLD.csv"
    fi
fi
[[ -f "$SPLIT" ]] || fail "split file $SPLIT not found; pass --split FILE or --fold between 0 and K-1"

# ---------------------------------------------------------------------------------------
# Network sizes. Synthetic: a small encoder and few epochs, so that the demo finishes in
# minutes on a CPU. Real data: 60 segmentation epochs (12 minutes for jsrt224 on a 2-core
# CPU) and the adaptive wing loss for both heatmap stages, because with the MSE default,
# from-scratch training on about 150 images flattens the heatmaps.
SEG_FLAGS=(--epochs 60 --patience 60)
COARSE_FLAGS=(--loss adaptive_wing --epochs 60 --patience 60)
FINE_FLAGS=(--loss adaptive_wing --sigma-px 3 --epochs 25 --patience 25)
# With the MSE loss, from-scratch heatmap training on a few dozen images collapses to flat
# heatmaps in this few steps. Batches of 4, wider Gaussians and the adaptive wing loss keep
# the peaks; this was measured on the synthetic set only.
SMALL_HEATMAP=(--encoder tu-mobilenetv3_small_050 --loss adaptive_wing --sigma-px 3 --batch-size 4)
if [[ "$DATA" == synthetic ]]; then
    SEG_FLAGS=(--encoder tu-mobilenetv3_small_050 --input-size 128 --decoder-channels 32,16,16,8,8 --epochs 15)
    COARSE_FLAGS=("${SMALL_HEATMAP[@]}" --input-size 96 --epochs 15)
    FINE_FLAGS=("${SMALL_HEATMAP[@]}" --crop-output-size 48 --epochs 10 --repeats 2)
fi
if ((QUICK)); then
    SEG_FLAGS=(--encoder tu-mobilenetv3_small_050 --input-size 64 --decoder-channels 16,16,8,8,8 --epochs 6
               --batch-size 4 --lr 0.005)
    COARSE_FLAGS=("${SMALL_HEATMAP[@]}" --input-size 64 --epochs 6)
    FINE_FLAGS=("${SMALL_HEATMAP[@]}" --crop-output-size 32 --epochs 4 --repeats 1)
fi
if [[ -z "$CROP_SIZE_PX" ]]; then
    CROP_SIZE_PX=64
    [[ "$DATASET_NAME" == shenzhen512 ]] && CROP_SIZE_PX=128
fi
FINE_FLAGS+=(--crop-size-px "$CROP_SIZE_PX")

# JSRT films were digitised at 2048 x 2048 pixels of 0.175 mm (JSRT and SCR database
# descriptions), so the 224-pixel copies have pixels of 0.175 * 2048 / 224 = 1.6 mm.
if [[ -z "$PIXEL_SPACING_MM" && "$DATASET_NAME" == jsrt224 ]]; then
    PIXEL_SPACING_MM=1.6
fi

ENCODING_FLAGS=()
[[ -n "$MASK_ENCODING" ]] && ENCODING_FLAGS=(--mask-encoding "$MASK_ENCODING")
SPACING_FLAGS=()
[[ -n "$PIXEL_SPACING_MM" ]] && SPACING_FLAGS=(--pixel-spacing-mm "$PIXEL_SPACING_MM")

# ---------------------------------------------------------------------------------------
# Lung segmentation: train, then score the test part and export its masks.

SEG="$OUT/segmentation"
run_step segmentation_train "$SEG/train" train \
    "$PY" "$REPO/segmentation_train/train.py" --data-root "$DATA_ROOT" --split "$SPLIT" \
    --output-dir "$SEG/train" "${ENCODING_FLAGS[@]}" "${SEG_FLAGS[@]}" "${TORCH_FLAGS[@]}"

run_step segmentation_test "$SEG/test" eval \
    "$PY" "$REPO/segmentation_test/evaluate.py" --checkpoint "$SEG/train/best.pt" \
    --data-root "$DATA_ROOT" --split "$SPLIT" --part test --output-dir "$SEG/test" \
    --postprocess largest,fill --export-masks "${ENCODING_FLAGS[@]}" "${TORCH_FLAGS[@]}"

# ---------------------------------------------------------------------------------------
# Metadata: reference points and ground-truth masks of every image of the split.

run_step metadata "$OUT/metadata" data \
    "$PY" "$REPO/heatmap_preprocessing/build_metadata.py" --data-root "$DATA_ROOT" \
    --measurements "$LANDMARKS" --split "$SPLIT" --dataset-name "$DATASET_NAME" \
    --output-dir "$OUT/metadata" "${ENCODING_FLAGS[@]}" "${SPACING_FLAGS[@]}"
METADATA="$OUT/metadata/metadata.csv"

# ---------------------------------------------------------------------------------------
# Dome heatmaps: stage 1 and stage 2 per input, trained on ground-truth masks, then
# predicted on the test part from the exported (predicted, post-processed) masks.

HEAT="$OUT/heatmap"
INPUTS=(mask)
((ABLATIONS)) && INPUTS=(mask image image+mask)
PREDICTIONS=()
for INPUT in "${INPUTS[@]}"; do
    TAG="${INPUT/+/_}"
    run_step "heatmap_${TAG}_coarse" "$HEAT/${TAG}_coarse" train \
        "$PY" "$REPO/heatmap_train/train.py" --stage coarse --metadata "$METADATA" --split "$SPLIT" \
        --input-mode "$INPUT" --output-dir "$HEAT/${TAG}_coarse" "${COARSE_FLAGS[@]}" "${TORCH_FLAGS[@]}"
    run_step "heatmap_${TAG}_fine" "$HEAT/${TAG}_fine" train \
        "$PY" "$REPO/heatmap_train/train.py" --stage fine --metadata "$METADATA" --split "$SPLIT" \
        --input-mode "$INPUT" --coarse-checkpoint "$HEAT/${TAG}_coarse/best.pt" \
        --output-dir "$HEAT/${TAG}_fine" "${FINE_FLAGS[@]}" "${TORCH_FLAGS[@]}"
    run_step "predict_${TAG}" "$HEAT/predict_${TAG}" eval \
        "$PY" "$REPO/heatmap_test/predict.py" --coarse-checkpoint "$HEAT/${TAG}_coarse/best.pt" \
        --fine-checkpoint "$HEAT/${TAG}_fine/best.pt" --metadata "$METADATA" --split "$SPLIT" --part test \
        --mask-index "$SEG/test/masks_index.csv" --output-dir "$HEAT/predict_${TAG}" --overlays \
        "${TORCH_FLAGS[@]}"
    PREDICTIONS+=(--predictions "$INPUT=$HEAT/predict_${TAG}/predictions.csv")
done
if ((ABLATIONS)); then
    # The mask input again, on the segmentation's raw masks (no post-processing).
    run_step predict_mask_raw "$HEAT/predict_mask_raw" eval \
        "$PY" "$REPO/heatmap_test/predict.py" --coarse-checkpoint "$HEAT/mask_coarse/best.pt" \
        --fine-checkpoint "$HEAT/mask_fine/best.pt" --metadata "$METADATA" --split "$SPLIT" --part test \
        --seg-checkpoint "$SEG/train/best.pt" --postprocess none --output-dir "$HEAT/predict_mask_raw" \
        "${TORCH_FLAGS[@]}"
    PREDICTIONS+=(--predictions "mask-raw=$HEAT/predict_mask_raw/predictions.csv")
fi

run_step heatmap_evaluate "$HEAT/evaluate" eval \
    "$PY" "$REPO/heatmap_test/evaluate.py" --metadata "$METADATA" --split "$SPLIT" --part test \
    "${PREDICTIONS[@]}" --output-dir "$HEAT/evaluate"

# ---------------------------------------------------------------------------------------
# Geometric baseline: the mask rule's six points on the predicted test masks.

run_step baseline "$OUT/baseline" eval \
    "$PY" "$REPO/heatmap_preprocessing/derive_landmarks.py" --masks-dir "$SEG/test/masks" \
    --mask-encoding labels:1,2 --reference "$LANDMARKS" --output-dir "$OUT/baseline"

# ---------------------------------------------------------------------------------------
# Report. It is rebuilt on every run, because it only reads the files above.

show "$PY" "$REPO/tools/make_report.py" --run-dir "$OUT"
"$PY" "$REPO/tools/make_report.py" --run-dir "$OUT"
touch "$DONE/report"
echo "pipeline.sh: finished; report at $OUT/report.md" >&2
