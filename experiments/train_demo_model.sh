#!/usr/bin/env bash
# The recipe of the shipped demo weights (weights/demo_128 and weights/demo_128_spec), end to end,
# on any folder of clips and photos; rerunning resumes (prepare_data.py reuses its per-file cache,
# train.py its workdir):
#   1. prepare INPUT into a RESxRES TFDS dataset in DATA_DIR (JPEG crops), the test identities held
#      out by name (experiments/prepare_data.py; skipped when INPUT is a prepared dataset already);
#   2. train CONFIG in WORKDIR;
#   3. train the motion-free model: the same config with --config.model.motion=none (the method's
#      decoders alone), the same data and steps, in WORKDIR_spec;
#   4. export both EMA generators (experiments/export.py) to OUT and SPEC_OUT;
#   5. write both model cards (experiments/write_model_card.py: OUT/README.md, SPEC_OUT/README.md),
#      before the evaluation so that a new card holds the markers of its tables;
#   6. evaluate OUT on the held-out identities beside SPEC_OUT and the baselines, write the tables
#      into README.md and OUT/README.md, redraw docs/demo_grid.png (experiments/evaluate_demo_model.sh).
# A smoke run of every step in minutes (the bundled sample, the tiny model at 128, where dlib still
# finds the faces the evaluation needs), writing nothing outside /tmp and workdirs/:
#   bash experiments/train_demo_model.sh --input=sample_data --test_identities=lp_d12_man \
#     --config=experiments/configs/tiny.py --steps=2 --data_dir=/tmp/smoke/tfds \
#     --workdir=/tmp/smoke/model --out=/tmp/smoke/out --spec_out=/tmp/smoke/spec --finetune_steps=2 --readme= --grid=
#
#   bash experiments/train_demo_model.sh [--name=value ...]
# Flags (paths relative to the repository root; defaults in brackets):
#   --input=DIR            the folder of clips and photos (identity: the file name's part before
#                          "__") [../shared/faces]; a dataset prepared by experiments/prepare_data.py
#                          (it has face_frames/, e.g. shards copied to a GPU machine) is trained on
#                          as it is: prepared mode, DATA_DIR is INPUT and step 1 is skipped
#   --prepared             insist on prepared mode (an error when INPUT has no face_frames/)
#   --test_identities=a,b  the held-out identities, by name [lp_d12_man,lp_d7_woman,pcavs_00015_man,
#                          hdtf_rd_radio2_woman,barack_obama,anne_hathaway]
#   --resolution=N         crop size of the data, the model and the evaluation [128]
#   --config=FILE          the training config [experiments/configs/faces.py]
#   --data_dir=DIR         the prepared dataset [workdirs/faces_tfds]
#   --workdir=DIR          the model's training workdir; the motion-free one is DIR_spec [workdirs/faces_model]
#   --out=DIR              the model's export and card [weights/demo_128]
#   --spec_out=DIR         the motion-free model's export and card ("" skips its training, export and
#                          card, and its row of the table) [weights/demo_128_spec]
#   --steps=N              num_train_steps of both runs [the config's]
#   --finetune_steps=N     fine-tuning steps of the evaluation's personalized row (0: no row) [50]
#   --readme=FILE          the top-level README that also gets the tables ("" for only the card) [README.md]
#   --grid=FILE            the picture ("" skips it) [docs/demo_grid.png]
#   --dry_run              print every command instead of running it
# The bundled-sample recipe (experiments/configs/demo.py):
#   bash experiments/train_demo_model.sh --input=sample_data --test_identities=lp_d12_man,barack_obama \
#     --config=experiments/configs/demo.py --data_dir=workdirs/sample_tfds --workdir=workdirs/demo_model \
#     --out=workdirs/demo_model_export --spec_out=workdirs/demo_model_spec_export --readme= --grid=
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
source experiments/recipe_commands.sh  # parse_flags, quoted, run

INPUT=../shared/faces
PREPARED=0
TEST_IDENTITIES=lp_d12_man,lp_d7_woman,pcavs_00015_man,hdtf_rd_radio2_woman,barack_obama,anne_hathaway
RESOLUTION=128
CONFIG=experiments/configs/faces.py
DATA_DIR=workdirs/faces_tfds
WORKDIR=workdirs/faces_model
OUT=weights/demo_128
SPEC_OUT=weights/demo_128_spec
STEPS=
FINETUNE_STEPS=50
README=README.md
GRID=docs/demo_grid.png
DRY_RUN=0
parse_flags "input prepared test_identities resolution config data_dir workdir out spec_out steps finetune_steps
  readme grid" "$@"
if [ ${#POSITIONAL[@]} -gt 0 ]; then
  echo "train_demo_model.sh: unexpected ${POSITIONAL[*]} (flags are --name=value)" >&2
  exit 2
fi
if [ ! -d "$INPUT" ]; then
  echo "train_demo_model.sh: input folder $INPUT not found" >&2
  exit 1
fi
if [ -d "$INPUT/face_frames" ]; then
  echo "train_demo_model.sh: $INPUT is a prepared dataset: training on it as it is (its split holds out" \
    "its own test identities)" >&2
  DATA_DIR=$INPUT
elif [ "$PREPARED" = 1 ]; then
  echo "train_demo_model.sh: --prepared, but $INPUT has no face_frames/ (not made by experiments/prepare_data.py)" >&2
  exit 1
else
  run "$PY" experiments/prepare_data.py --input="$INPUT" --output="$DATA_DIR" --resolution="$RESOLUTION" \
    --test_identities="$TEST_IDENTITIES" --image_format=jpeg
fi

SPEC_WORKDIR=${WORKDIR}_spec
OVERRIDES=(--config.data.data_dir="$DATA_DIR" --config.resolution="$RESOLUTION")
if [ -n "$STEPS" ]; then OVERRIDES+=(--config.num_train_steps="$STEPS"); fi
TRAIN=(experiments/train.py --config="$CONFIG" --workdir="$WORKDIR" "${OVERRIDES[@]}")
SPEC_TRAIN=(experiments/train.py --config="$CONFIG" --workdir="$SPEC_WORKDIR" "${OVERRIDES[@]}"
            --config.model.motion=none)
run "$PY" "${TRAIN[@]}"
if [ -n "$SPEC_OUT" ]; then run "$PY" "${SPEC_TRAIN[@]}"; fi

run "$PY" experiments/export.py --workdir="$WORKDIR" --output="$OUT"
if [ -n "$SPEC_OUT" ]; then run "$PY" experiments/export.py --workdir="$SPEC_WORKDIR" --output="$SPEC_OUT"; fi

CARD=(experiments/write_model_card.py --input="$INPUT" --data_dir="$DATA_DIR" --config="$CONFIG")
run "$PY" "${CARD[@]}" --workdir="$WORKDIR" --out="$OUT" --command="python $(quoted "${TRAIN[@]}")"
if [ -n "$SPEC_OUT" ]; then
  run "$PY" "${CARD[@]}" --workdir="$SPEC_WORKDIR" --out="$SPEC_OUT" --command="python $(quoted "${SPEC_TRAIN[@]}")" \
    --noevaluation_markers
fi

EVAL=(experiments/evaluate_demo_model.sh --model="$OUT" --spec="$SPEC_OUT" --input="$INPUT"
      --test_identities="$TEST_IDENTITIES" --resolution="$RESOLUTION" --finetune_steps="$FINETUNE_STEPS"
      --readme="$README" --grid="$GRID")
if [ "$DRY_RUN" = 1 ]; then
  echo "+ bash $(quoted "${EVAL[@]}"), which runs:"
  bash "${EVAL[@]}" --dry_run
else
  run bash "${EVAL[@]}"
fi
