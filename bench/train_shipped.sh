#!/usr/bin/env bash
# Trains the shipped models (weights/) with the recipe of docs/training.md: the five compact styles
# (the paper's loss on MobileNetV2, plus the range term and the colour guide), the paper-width
# Starry Night, the three x4 upscalers.
#   bench/train_shipped.sh DATA_DIR OUT_DIR [STEPS] [SECONDS] [PARTS]
# DATA_DIR holds train/ (photos), styles/ (paintings) and, optionally, LOSS_NETWORK.pt (the loss
# network's weights, as bench/gpu_pack.py writes them for machines without its package).
# PARTS: any of "styles full sr" (default "styles"). Each run stops at STEPS (default 40000, the
# paper's) or after SECONDS (SIGTERM: it checkpoints), and its model file is then written from the
# checkpoint into OUT_DIR/models. All runs of a part go in parallel on one device.
# Environment: IMPASTO_DEVICE (default cuda), SIZE / FINAL_SIZE / FINAL_STEPS (crops: default 256
# throughout, the paper's; on a CPU e.g. SIZE=128 FINAL_SIZE=256 FINAL_STEPS=300), BATCH (4),
# ONLY="great-wave udnie" (a subset of the styles), THREADS (CPU threads per run), STYLE_WEIGHT
# (1e9), COLOUR (the colour guide's weight, 1e7; 0 turns it off).
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

train() {  # train RUN_NAME ARGS...: one background run, its model exported from the checkpoint
    local run=$1; shift
    (
        timeout --signal=TERM "$seconds" python3 -m trainer "$@" "${common[@]}" \
            --run-dir "$out/runs/$run" --output "$out/models/$run.impasto" --overwrite >"$out/runs/$run.log" 2>&1
        [ -f "$out/models/$run.impasto" ] ||
            python3 -m trainer export "$out/runs/$run" --output "$out/models/$run.impasto" >>"$out/runs/$run.log" 2>&1
    ) &
}

style() {  # style NAME FILE STYLE_WEIGHT STYLE_SIZE WIDTH "DISPLAY NAME" "CREDIT"
    local name=$1 file=$2 weight=$3 size=$4 width=$5 display=$6 credit=$7
    [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]] && return
    train "$name" style --name "$name" --style-image "$data/styles/$file" --width "$width" \
        "${lossnet[@]}" --style-weight "$weight" --colour-weight "${COLOUR:-1e7}" \
        --style-size "$size" --steps "$steps" "${sizes[@]}" \
        --display-name "$display" --credit "$credit" --description "Restyles a photo after $credit"
}

# The recipe per painting (style weight, painting size): docs/training.md shows the sweeps behind it.
if [[ $parts == *styles* ]]; then
style starry-night starry_night.jpg "${STYLE_WEIGHT:-1e9}" 256 compact "Starry Night" "Vincent van Gogh, The Starry Night (1889), public domain"
style great-wave wave.jpg "${STYLE_WEIGHT:-1e9}" 256 compact "Great Wave" "Katsushika Hokusai, The Great Wave off Kanagawa (c. 1831), public domain"
style the-scream the_scream.jpg "${STYLE_WEIGHT:-1e9}" 256 compact "The Scream" "Edvard Munch, The Scream (1893), public domain"
style composition-vii composition_vii.jpg "${STYLE_WEIGHT:-1e9}" 256 compact "Composition VII" "Wassily Kandinsky, Composition VII (1913), public domain"
style udnie udnie.jpg "${STYLE_WEIGHT:-1e9}" 256 compact "Udnie" "Francis Picabia, Udnie (1913), public domain"
fi
[[ $parts == *full* ]] &&
style starry-night-full starry_night.jpg "${STYLE_WEIGHT:-1e9}" 256 full "Starry Night (full width)" "Vincent van Gogh, The Starry Night (1889), public domain"
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
