#!/usr/bin/env bash
# Run the paper's scene-probing sweep on a Cloud TPU VM (a single host, or a multi-host slice: every worker runs
# the same command under jax.distributed, every chip on the mesh's data axis), then fetch the results. Not run where
# jaxprobe is built (no cloud access there); see docs/scale-out.md for what each step needs and the memory it takes.
#
#   NAME=jaxprobe-v4 ZONE=us-central2-b TYPE=v4-8 WEIGHTS=/local/stable-diffusion-v1-4 \
#   PROMPTS=prompts.txt LABELS=labels/ launch/tpu_vm.sh
#
# WEIGHTS is a local diffusers SD v1 directory (copied to every worker) or gs://bucket/path (copied with gsutil on
# each worker). On a multi-host slice RUNS must be a path every worker sees (a Filestore/NFS or gcsfuse mount).
set -euo pipefail

: "${NAME:?set NAME, the TPU VM name}" "${ZONE:?set ZONE}" "${TYPE:=v4-8}" "${VERSION:=tpu-ubuntu2204-base}"
: "${WEIGHTS:?set WEIGHTS, a diffusers SD v1 directory or gs:// path}" "${PROMPTS:?set PROMPTS, one prompt per line}"
: "${LABELS:?set LABELS, a labels directory (docs/labels.md: index.csv + saliency.npy or segmentation.npy + depth.npy)}"
: "${RUNS:=\$HOME/runs}" "${OUT:=runs/$NAME}"
SSH=(gcloud compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" --worker=all --command)
SCP=(gcloud compute tpus tpu-vm scp --zone "$ZONE" --worker=all --recurse)

echo "1/5 create $TYPE TPU VM $NAME in $ZONE"
gcloud compute tpus tpu-vm describe "$NAME" --zone "$ZONE" >/dev/null 2>&1 ||
  gcloud compute tpus tpu-vm create "$NAME" --zone "$ZONE" --accelerator-type "$TYPE" --version "$VERSION"

echo "2/5 install this checkout (HEAD) with TPU jax on every worker"
git archive --format=tar.gz -o /tmp/jaxprobe.tgz HEAD
"${SCP[@]}" /tmp/jaxprobe.tgz "$NAME:jaxprobe.tgz"
"${SSH[@]}" "set -e; mkdir -p jaxprobe && tar -xzf jaxprobe.tgz -C jaxprobe && cd jaxprobe &&
  pip install -q -e . && pip install -q 'jax[tpu]==0.10.2' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html"

echo "3/5 weights, prompts and labels on every worker"
if [[ "$WEIGHTS" == gs://* ]]; then
  "${SSH[@]}" "mkdir -p sd && gsutil -m -q rsync -r $WEIGHTS sd"
else
  "${SCP[@]}" "$WEIGHTS" "$NAME:sd"
fi
"${SCP[@]}" "$PROMPTS" "$NAME:prompts.txt"
"${SCP[@]}" "$LABELS" "$NAME:labels"

echo "4/5 the sweep on every worker (a rerun of this step resumes)"
"${SSH[@]}" "cd jaxprobe && python launch/probe.py --distributed --config=configs/scene/sd_v1_paper.py \
  --config.pipeline_dir=\$HOME/sd --config.prompts_file=\$HOME/prompts.txt --config.labels_dir=\$HOME/labels \
  --config.mesh.data=-1 --workdir=$RUNS/sd_v1_paper"

echo "5/5 fetch results.csv, summary.json and figures/ to $OUT"
mkdir -p "$OUT"
gcloud compute tpus tpu-vm scp --zone "$ZONE" --worker=0 --recurse \
  "$NAME:$RUNS/sd_v1_paper/{results.csv,summary.json,figures}" "$OUT/"
echo "done: $OUT (delete the VM with: gcloud compute tpus tpu-vm delete $NAME --zone $ZONE)"
