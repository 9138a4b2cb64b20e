#!/usr/bin/env bash
# The issue-17 report runs that do not fit this project's 2-core CPU in one session, as one
# batch for a lent GPU machine (all at once on one GPU, 2 CPU threads each): BERT4Rec and two
# more SASRec + CE seeds on ml-1m-sasrec, Ada-Retrieval over GRU4Rec on Yelp (from its own
# saved GRU4Rec), and the MQSA-TED ablations on Yelp beside a SASRec + CE baseline.
#
# Prepare, here, in the repository root (nothing of it is committed):
#   printf '/.whl/\n/shared/\n' >> .git/info/exclude
#   mkdir -p shared/data/s3rec && cp ../shared/data/README.md shared/data/ \
#     && cp -r ../shared/data/ml-1m-sasrec shared/data/ \
#     && cp ../shared/data/s3rec/Yelp.txt shared/data/s3rec/ && chmod -R u+w shared
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl polars==1.33.1 pydantic==2.14.4 pydantic_core==2.50.5 typing-inspection==0.4.5 \
#     annotated-types==0.8.0 platformdirs==4.14.9 pooch==1.9.0
#   (polars 1.33 is one 40 MB wheel; 2.x needs a 54 MB runtime and breaks the 64 MiB limit)
# Then on the device (run tool, carry [".whl", "shared"], timeout 570):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl \
#     && export PYTHONPATH=/tmp/site && bash benchmarks/device/issue17_batch.sh 420 190 220
# Results come back as $OUT/runs.tgz (reports, per-user metrics; no weights): compare with
# `userlens compare RUN_A/LABEL RUN_B/LABEL` after unpacking. Checked end to end on the CPU
# with tiny time limits (PY=.venv/bin/python EXTRA_PATH=<polars 1.33 dir> ... 25 15 15).
set -u
ROOT=$(pwd)
PY=${PY:-python3}
TLL=${1:-420}; TLG=${2:-190}; TLA=${3:-220}
R=${RUNS:-/tmp/devruns}; G=$R/configs; OUTDIR=${OUT:-/tmp/devout}
mkdir -p $R/logs $G $OUTDIR
export PYTHONPATH=${EXTRA_PATH:-/tmp/site}:$ROOT/src PYTHONUNBUFFERED=1
YELP="[data]
path = \"$ROOT/shared/data/s3rec/Yelp.txt\"
format = \"sequences\"

[split]
method = \"leave_one_out\"
"
M1='metrics = ["hr@10", "ndcg@10", "hr@20", "ndcg@20", "mrr@10", "coverage@10"]'
M2='metrics = ["hr@10", "ndcg@10", "hr@50", "ndcg@50", "hr@100", "ndcg@100"]'
SAS='loss = "ce", dim = 64, n_blocks = 2, n_heads = 1, max_len = 50, dropout = 0.3, learning_rate = 1e-3, batch_size = 128, max_epochs = 100, patience = 10, eval_every = 2, loss_mean = "global", threads = 2'
GRU='loss = "ce", dim = 64, n_layers = 1, max_len = 50, dropout = 0.3, learning_rate = 1e-3, batch_size = 128, max_epochs = 100, patience = 10, eval_every = 2, loss_mean = "global", threads = 2'
yelp() {  # yelp NAME METRICS MODEL LABEL PARAMS
  printf 'name = "%s"\nseed = 0\n\n%s\n[evaluation]\n%s\n\n[[models]]\nname = "%s"\nlabel = "%s"\nparams = { %s }\n' \
    "$1" "$YELP" "$2" "$3" "$4" "$5" > $G/$1.toml
}
yelp yelp-sasrec "$M1" sasrec sasrec "$SAS, time_limit_seconds = $TLL"
yelp yelp-mqsa-only "$M1" mqsa_ted mqsa-only "$SAS, query_window = 3, alpha = 0.5, distill_weight = 0.0, distill_temperature = 0.1, time_limit_seconds = $TLL"
yelp yelp-ted-only "$M1" mqsa_ted ted-only "$SAS, query_window = 3, alpha = 1.0, distill_weight = 0.1, distill_temperature = 0.1, time_limit_seconds = $TLL"
yelp yelp-gru4rec "$M2" gru4rec gru4rec "$GRU, time_limit_seconds = $TLG"
yelp yelp-ada-gru4rec "$M2" ada_retrieval ada-gru4rec "backbone = \"gru4rec\", backbone_from = \"$R/yelp-gru4rec/gru4rec\", $GRU, rounds = 5, round_size = 20, round_weight = 1.0, mask_selected = true, adapt_learning_rate = 1e-4, adapt_max_epochs = 30, adapt_valid_k = 50, time_limit_seconds = $TLA"
sed -e "s/ }\$/, threads = 2, time_limit_seconds = $TLL }/" configs/ml-1m-bert4rec.toml > $G/ml1m-bert4rec.toml
for s in 1 2; do
  sed -e "s/ }\$/, threads = 2, time_limit_seconds = $TLL }/" -e "s/^seed = 0/seed = $s/" \
    configs/ml-1m-sasrec.toml > $G/ml1m-sasrec-s$s.toml
done
run() { $PY -m userlens.cli.main run $G/$1.toml --out $R/$1 > $R/logs/$1.log 2>&1; echo "$1 rc=$? $(date +%T)"; }
date +%T
for n in ml1m-bert4rec ml1m-sasrec-s1 ml1m-sasrec-s2 yelp-sasrec yelp-mqsa-only yelp-ted-only; do run $n & done
(run yelp-gru4rec; run yelp-ada-gru4rec) &
wait
tail -n 4 $R/logs/*.log
tar czf $OUTDIR/runs.tgz -C $R --exclude='model/*.npz' --exclude='model/*.safetensors' .
ls -la $OUTDIR
