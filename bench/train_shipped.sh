#!/usr/bin/env bash
# Trains every shipped model (weights/) in parallel on one GPU: the five compact styles, the
# paper-width Starry Night for the compact-vs-full comparison, and the two x4 super-resolution models.
#   bench/train_shipped.sh DATA_DIR OUT_DIR [STEPS] [SECONDS] [PARTS]
# PARTS: any of "styles full sr" (default all). STYLE_WEIGHTS="a b": one style run per weight
# (default 1e9; docs/models.md shows the 3e9 and 2e10 sweeps, which were too strong).
# DATA_DIR holds train/ (photos) and styles/ (paintings). Each run stops at STEPS or after SECONDS
# (SIGTERM: it checkpoints), and the model file is then written from its checkpoint.
set -u
data=$1 out=$2 steps=${3:-3000} seconds=${4:-360} parts=${5:-styles full sr}
mkdir -p "$out/models" "$out/runs"
export OMP_NUM_THREADS=2
common=(--dataset "$data/train" --device "${IMPASTO_DEVICE:-cuda}" --amp --checkpoint-every 250 --preview-every 1000 --log-every 50)

train() {  # train RUN_NAME ARGS...: one background run, its model exported from the checkpoint
    local run=$1; shift
    (
        timeout --signal=TERM "$seconds" python3 -m trainer "$@" "${common[@]}" \
            --run-dir "$out/runs/$run" --output "$out/models/$run.impasto" >"$out/runs/$run.log" 2>&1
        [ -f "$out/models/$run.impasto" ] ||
            python3 -m trainer export "$out/runs/$run" --output "$out/models/$run.impasto" >>"$out/runs/$run.log" 2>&1
    ) &
}

style() {  # style NAME FILE "DISPLAY NAME" "CREDIT"
    local name=$1 file=$2 display=$3 credit=$4
    for weight in ${STYLE_WEIGHTS:-1e9}; do
        train "$name@$weight" style --name "$name" --style-image "$data/styles/$file" --width compact \
            --style-weight "$weight" --steps "$steps" --batch-size 8 --display-name "$display" \
            --credit "$credit" --description "Restyles a photo after $credit"
    done
}

if [[ $parts == *styles* ]]; then
style starry-night starry_night.jpg "Starry Night" "Vincent van Gogh, The Starry Night (1889), public domain"
style great-wave wave.jpg "Great Wave" "Katsushika Hokusai, The Great Wave off Kanagawa (c. 1831), public domain"
style the-scream the_scream.jpg "The Scream" "Edvard Munch, The Scream (1893), public domain"
style composition-vii composition_vii.jpg "Composition VII" "Wassily Kandinsky, Composition VII (1913), public domain"
style udnie udnie.jpg "Udnie" "Francis Picabia, Udnie (1913), public domain"
fi
[[ $parts == *full* ]] &&
train "starry-night-full@1e9" style --name starry-night-full --style-image "$data/styles/starry_night.jpg" \
    --width full --style-weight 1e9 --steps "$steps" --batch-size 8 --display-name "Starry Night (full width)"
[[ $parts == *sr* ]] && for loss in pixel perceptual; do
    name=$([ $loss = pixel ] && echo sr-faithful || echo sr-sharp)
    train "$name" sr --name "$name" --scale 4 --loss $loss --degradation matlab --image-size 192 \
        --batch-size 16 --steps $((steps * 4 / 3)) --display-name "Upscale x4 ($([ $loss = pixel ] && echo faithful || echo sharp))"
done
wait
ls -la "$out/models"
