#!/usr/bin/env bash
# Evaluates a model on the held-out identities of an input folder, beside the motion-free model of
# the same recipe and the copy-source and landmark-warp baselines, and draws the README picture:
#   1. self-reenactment at RES on every held-out clip (the input folder's clips whose identity, the
#      file name's part before "__", is one of the test identities): the model, the model
#      personalized on each clip's source frame (evaluate.py --finetune_steps), the motion-free
#      model (--compare), copy-source and landmark-warp; the table goes into README.md and the
#      model's card (MODEL/README.md), between the "evaluate.py table" markers of each file that
#      has them;
#   2. cross-identity: every held-out photo and every held-out clip's first frame is the source of
#      every held-out clip of another identity (--protocol=cross --sources --motion=relative), written
#      between the "evaluate.py cross table" markers of each file that has them (skipped when the
#      held-out files are all of one identity);
#   3. the picture (docs/demo_grid.png): the first held-out photo reenacted by the first held-out
#      clip of another identity (the bundled sample_data/ files where there is none).
# The held-out files are linked into HELDOUT/clips (the clips) and HELDOUT/sources (photos and
# clips), which evaluate.py reads as folders.
#
#   bash experiments/evaluate_demo_model.sh [MODEL_DIR] [--name=value ...]
# Flags (paths relative to the repository root; defaults in brackets):
#   --model=DIR            the model, an export or a training workdir [weights/demo_128]; also the
#                          first positional argument
#   --spec=DIR             the motion-free model compared with it ("" leaves it out) [weights/demo_128_spec]
#   --input=DIR            the folder of clips and photos [../shared/faces]; when it does not exist
#                          (a fresh clone), the bundled sample_data/ (held out there: lp_d12_man). A
#                          dataset prepared by experiments/prepare_data.py (it has face_frames/) is
#                          evaluated on its test split (self-reenactment only; the picture from sample_data/)
#   --test_identities=a,b  the held-out identities [lp_d12_man,lp_d7_woman,pcavs_00015_man,
#                          hdtf_rd_radio2_woman,barack_obama,anne_hathaway]
#   --resolution=N         evaluation crop size [128]
#   --finetune_steps=N     the personalized row's fine-tuning steps (0 leaves the row out) [50]
#   --max_frames=N         self-reenactment: frames read per clip ("" for all) [100]
#   --cross_max_frames=N   cross-identity: frames read per driving clip [40]
#   --heldout=DIR          where the held-out files are linked [workdirs/heldout]
#   --output=DIR           evaluation output; the cross-identity one goes to DIR_cross [workdirs/demo_eval]
#   --readme=FILE          the top-level README that also gets the tables ("" for none) [README.md]
#   --grid=FILE            the picture ("" skips it) [docs/demo_grid.png]
#   --dry_run              print the commands instead of running them
# Examples: bash experiments/evaluate_demo_model.sh --input=sample_data    (the bundled sample only)
#           bash experiments/evaluate_demo_model.sh workdirs/faces_model --readme= --grid=
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
source experiments/recipe_commands.sh  # parse_flags, quoted, run
SAMPLE_PHOTO=sample_data/barack_obama__face_recognition__obama.jpg
SAMPLE_CLIP=sample_data/lp_d12_man__liveportrait__d12.mp4
VIDEO_EXT=" mp4 avi mov mkv webm m4v "  # as VIDEO_EXTENSIONS and IMAGE_EXTENSIONS of facegen_jax/data/prepare.py
IMAGE_EXT=" jpg jpeg png bmp webp "

MODEL=weights/demo_128
SPEC=weights/demo_128_spec
INPUT=../shared/faces
TEST_IDENTITIES=lp_d12_man,lp_d7_woman,pcavs_00015_man,hdtf_rd_radio2_woman,barack_obama,anne_hathaway
RESOLUTION=128
FINETUNE_STEPS=50
MAX_FRAMES=100
CROSS_MAX_FRAMES=40
HELDOUT=workdirs/heldout
OUTPUT=workdirs/demo_eval
README=README.md
GRID=docs/demo_grid.png
DRY_RUN=0
parse_flags "model spec input test_identities resolution finetune_steps max_frames cross_max_frames heldout output readme grid" "$@"
if [ ${#POSITIONAL[@]} -gt 1 ]; then
  echo "evaluate_demo_model.sh: one model only, got ${POSITIONAL[*]}" >&2
  exit 2
fi
if [ ${#POSITIONAL[@]} = 1 ]; then MODEL=${POSITIONAL[0]}; fi

# --readme=<the files among README and the card holding marker $1>, or nothing when none does.
readme_flag() {
  local found=() f
  for f in "$README" "$MODEL/README.md"; do
    if [ -n "$f" ] && grep -qF -- "$1" "$f" 2>/dev/null; then found+=("$f"); fi
  done
  if [ ${#found[@]} -gt 0 ]; then (IFS=,; echo "--readme=${found[*]}"); fi
}

if [ ! -d "$INPUT" ]; then
  echo "evaluate_demo_model.sh: $INPUT not found: evaluating on the bundled sample_data/ instead" >&2
  INPUT=sample_data
fi
COMPARE=()
if [ -n "$SPEC" ]; then COMPARE=(--compare="motion-free model=$SPEC"); fi
FINETUNE_FLAG=()
if [ "$FINETUNE_STEPS" != 0 ]; then FINETUNE_FLAG=(--finetune_steps="$FINETUNE_STEPS"); fi
MAX_FRAMES_FLAG=()
if [ -n "$MAX_FRAMES" ]; then MAX_FRAMES_FLAG=(--max_frames="$MAX_FRAMES"); fi
SELF_README=() CROSS_README=()
flag=$(readme_flag "evaluate.py table: begin")
if [ -n "$flag" ]; then SELF_README=("$flag"); fi
flag=$(readme_flag "evaluate.py cross table: begin")
if [ -n "$flag" ]; then CROSS_README=("$flag"); fi
if [ "$DRY_RUN" = 1 ]; then
  echo "# dry run: --readme names the files holding each table's markers now"
fi

# The held-out files: identity (the file name's part before "__") in --test_identities.
CLIPS=() PHOTOS=() CLIP_IDS=() PHOTO_IDS=()
if [ ! -d "$INPUT/face_frames" ]; then
  while IFS= read -r path; do
    name=${path##*/}
    ext=${name##*.}
    ext=${ext,,}
    identity=${name%%__*}
    if [[ "$name" != *__* || ",$TEST_IDENTITIES," != *",$identity,"* ]]; then continue; fi
    if [[ "$VIDEO_EXT" == *" $ext "* ]]; then CLIPS+=("$path"); CLIP_IDS+=("$identity")
    elif [[ "$IMAGE_EXT" == *" $ext "* ]]; then PHOTOS+=("$path"); PHOTO_IDS+=("$identity"); fi
  done < <(find -L "$INPUT" -name '.*' -prune -o -type f -print | LC_ALL=C sort)
  if [ ${#CLIPS[@]} = 0 ]; then
    echo "evaluate_demo_model.sh: no clip of the test identities $TEST_IDENTITIES in $INPUT" >&2
    exit 1
  fi
  run mkdir -p "$HELDOUT/clips" "$HELDOUT/sources"
  run find "$HELDOUT/clips" "$HELDOUT/sources" -maxdepth 1 -type l -delete  # the links of an earlier run
  for path in "${CLIPS[@]}"; do
    run ln -s "$(realpath "$path")" "$HELDOUT/clips/${path##*/}"
  done
  for path in "${PHOTOS[@]}" "${CLIPS[@]}"; do
    run ln -s "$(realpath "$path")" "$HELDOUT/sources/${path##*/}"
  done
fi

# 1. Self-reenactment.
if [ -d "$INPUT/face_frames" ]; then VIDEOS=$INPUT; else VIDEOS=$HELDOUT/clips; fi
run "$PY" experiments/evaluate.py --checkpoint="$MODEL" "${FINETUNE_FLAG[@]}" "${COMPARE[@]}" \
  --videos="$VIDEOS" --output="$OUTPUT" --resolution="$RESOLUTION" "${MAX_FRAMES_FLAG[@]}" "${SELF_README[@]}"

# 2. Cross-identity, when some source and some clip are of different people.
CROSS=0
for source_id in "${PHOTO_IDS[@]}" "${CLIP_IDS[@]}"; do
  for clip_id in "${CLIP_IDS[@]}"; do
    if [ "$source_id" != "$clip_id" ]; then CROSS=1; fi
  done
done
if [ "$CROSS" = 1 ]; then
  run "$PY" experiments/evaluate.py --checkpoint="$MODEL" "${COMPARE[@]}" --protocol=cross \
    --sources="$HELDOUT/sources" --videos="$HELDOUT/clips" --motion=relative --output="${OUTPUT}_cross" \
    --resolution="$RESOLUTION" --max_frames="$CROSS_MAX_FRAMES" "${CROSS_README[@]}"
elif [ -d "$INPUT/face_frames" ]; then
  echo "evaluate_demo_model.sh: $INPUT is a prepared dataset (no photos or clips): no cross-identity table" >&2
else
  echo "evaluate_demo_model.sh: the held-out files are all of one person: no cross-identity table" >&2
fi

# 3. The picture: a held-out photo driven by a held-out clip of someone else, else the bundled files.
if [ -n "$GRID" ]; then
  SOURCE=$SAMPLE_PHOTO SOURCE_ID=
  if [ ${#PHOTOS[@]} -gt 0 ]; then SOURCE=${PHOTOS[0]} SOURCE_ID=${PHOTO_IDS[0]}; fi
  DRIVING=${CLIPS[0]:-$SAMPLE_CLIP}
  for i in "${!CLIPS[@]}"; do
    if [ "${CLIP_IDS[$i]}" != "$SOURCE_ID" ]; then DRIVING=${CLIPS[$i]}; break; fi
  done
  run "$PY" experiments/reenact.py --checkpoint="$MODEL" --source="$SOURCE" --driving="$DRIVING" \
    --output="$OUTPUT/out.mp4" --overwrite --grid="$GRID" --grid_frames=6
fi
