#!/usr/bin/env bash
# Trains the shipped models (weights/) with the recipe of docs/training.md: the five compact styles
# and the paper-width Starry Night in two phases (the paper's loss on MobileNetV2 with the range
# term and the colour guide, then the session-15 fine-tune for the paintings' shapes: the relative
# loss form at style weight 3), the three x4 upscalers.
#   bench/train_shipped.sh DATA_DIR OUT_DIR [STEPS] [SECONDS] [PARTS]
# DATA_DIR holds train/ (photos), styles/ (paintings) and, optionally, LOSS_NETWORK.pt (the loss
# network's weights, as bench/gpu_pack.py writes them for machines without its package).
# PARTS: any of "styles full sr" (default "styles"). Each run stops at STEPS (default 40000, the
# paper's) or after SECONDS (SIGTERM: it checkpoints), and its model file is then written from the
# checkpoint into OUT_DIR/models. All runs of a part go in parallel on one device. A style's shape
# phase (SHAPE_STEPS, default 600) has SHAPE_SECONDS (default 120) of the SECONDS.
# Environment: IMPASTO_DEVICE (default cuda), SIZE / FINAL_SIZE / FINAL_STEPS (crops: default 256
# throughout, the paper's; on a CPU e.g. SIZE=128 FINAL_SIZE=256 FINAL_STEPS=300), BATCH (4),
# ONLY="great-wave udnie" (a subset of the styles), THREADS (CPU threads per run), STYLE_WEIGHT
# (1e9), COLOUR (the colour guide's weight, 1e7; 0 turns it off), SHAPE_SIZE / SHAPE_FINAL_SIZE /
# SHAPE_FINAL_STEPS (the shape phase's crops: 128, then 256 for the last 100 steps, as measured).
set -u
data=$1 out=$2 steps=${3:-40000} seconds=${4:-540} parts=${5:-styles}
mkdir -p "$out/models" "$out/runs"
device=${IMPASTO_DEVICE:-cuda}
export OMP_NUM_THREADS=${THREADS:-2}
common=(--dataset "$data/train" --device "$device" --amp --resident --checkpoint-every 1000
        --preview-every 5000 --log-every 100 --batch-size "${BATCH:-4}")
# MobileNetV2's weights from the pack where its package is absent.
[ -f "$data/mobilenet_v2.pt" ] && lossnet=(--loss-network mobilenet_v2 --loss-weights "$data/mobilenet_v2.pt") || lossnet=()
sizes=(--image-size "${SIZE:-256}")
[ -n "${FINAL_SIZE:-}" ] && sizes+=(--final-image-size "$FINAL_SIZE" --final-steps "${FINAL_STEPS:?}")

run_to() {  # run_to MODEL_FILE RUN_NAME SECONDS ARGS...: one run, its model exported from the checkpoint
    local model=$1 run=$2 limit=$3; shift 3
    timeout --signal=TERM "$limit" python3 -m trainer "$@" "${common[@]}" \
        --run-dir "$out/runs/$run" --output "$model" --overwrite >"$out/runs/$run.log" 2>&1
    [ -f "$model" ] || python3 -m trainer export "$out/runs/$run" --output "$model" >>"$out/runs/$run.log" 2>&1
}

train() {  # train RUN_NAME ARGS...: one background run into OUT_DIR/models/RUN_NAME.impasto
    local run=$1; shift
    run_to "$out/models/$run.impasto" "$run" "$seconds" "$@" &
}

shape_seconds=${SHAPE_SECONDS:-120}
shape=(--loss-form relative --style-weight 3 --colour-weight 100 --range-weight 1 --lr 5e-4
       --steps "${SHAPE_STEPS:-600}" --image-size "${SHAPE_SIZE:-128}"
       --final-image-size "${SHAPE_FINAL_SIZE:-256}" --final-steps "${SHAPE_FINAL_STEPS:-100}")

style() {  # style NAME FILE STYLE_SIZE WIDTH "DISPLAY NAME" "CREDIT" [SHAPE ARGS... | none]
    local name=$1 file=$2 size=$3 width=$4 display=$5 credit=$6; shift 6
    [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]] && return
    local first="$out/runs/$name-paper.impasto" final="$out/models/$name.impasto"
    local about=(--name "$name" --style-image "$data/styles/$file" --width "$width" "${lossnet[@]}"
                 --display-name "$display" --credit "$credit" --description "Restyles a photo after $credit")
    local first_seconds=$((seconds - shape_seconds))
    [ "${1:-}" = none ] && first_seconds=$seconds  # no shape phase: the whole budget
    (
        run_to "$first" "$name-paper" "$first_seconds" style "${about[@]}" \
            --style-weight "${STYLE_WEIGHT:-1e9}" --colour-weight "${COLOUR:-1e7}" --style-size 256 \
            --steps "$steps" "${sizes[@]}"
        if [ "${1:-}" = none ]; then cp "$first" "$final"
        else run_to "$final" "$name" "$shape_seconds" style "${about[@]}" --init-model "$first" \
            --style-size "$size" "${shape[@]}" "$@"
        fi
    ) &
}

# The recipe per painting (painting size in the shape phase, its extra options; docs/models.md has
# the sweeps behind them). The Scream keeps the first phase: the shape phase smeared its faces.
if [[ $parts == *styles* ]]; then
style starry-night starry_night.jpg 256 compact "Starry Night" "Vincent van Gogh, The Starry Night (1889), public domain"
style great-wave wave.jpg 512 compact "Great Wave" "Katsushika Hokusai, The Great Wave off Kanagawa (c. 1831), public domain" --colour-weight 300 --style-weight 1.5 --tv-weight 30
style the-scream the_scream.jpg 256 compact "The Scream" "Edvard Munch, The Scream (1893), public domain" none
style composition-vii composition_vii.jpg 512 compact "Composition VII" "Wassily Kandinsky, Composition VII (1913), public domain"
style udnie udnie.jpg 256 compact "Udnie" "Francis Picabia, Udnie (1913), public domain"
fi
[[ $parts == *full* ]] &&
style starry-night-full starry_night.jpg 256 full "Starry Night (full width)" "Vincent van Gogh, The Starry Night (1889), public domain"
# The upscalers (docs/models.md): 16 residual blocks; sharp compares MobileNetV2 features at a random
# pixel phase (--shifted-loss: no grid); photo learns from blurred, noisy, JPEG-compressed inputs.
sr_model() {  # sr_model NAME LOSS DEGRADATION "DISPLAY NAME" EXTRA...
    local name=$1 loss=$2 degradation=$3 display=$4; shift 4
    local sr_weights=()  # the perceptual model's loss network
    [ "$loss" = perceptual ] && sr_weights=("${lossnet[@]}")
    train "$name" sr --name "$name" --scale 4 --blocks 16 --loss "$loss" "${sr_weights[@]}" \
        --degradation "$degradation" --image-size 192 --batch-size 16 --steps $((steps * 4 / 3)) \
        --lr-schedule cosine --display-name "$display" "$@"
}
if [[ $parts == *sr* ]]; then
sr_model sr-faithful pixel matlab "Upscale x4 (faithful)"
sr_model sr-sharp perceptual matlab "Upscale x4 (sharp)" --shifted-loss
sr_model sr-photo pixel photo "Upscale x4 (photos, JPEG)"
fi
wait
ls -la "$out/models"
