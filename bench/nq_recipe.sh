#!/usr/bin/env bash
# The NQ recipe end to end on the shared data (../shared/data/nq), in Tevatron's two rounds. Round one: a
# small BERT trained from scratch on 2,105 NQ training questions with their BM25 negatives; the 2,588-passage
# corpus encoded, the 275 held-out questions searched and evaluated. Round two: the training questions
# searched with the round-one model, hard negatives mined from what it ranks high (mine.ts: depth 100,
# 30 per question, no positive and no passage containing an answer), a second model trained on them with the
# same settings, evaluated the same way; both rounds' dev metrics side by side at the end.
# Usage: bash bench/nq_recipe.sh [OUT_DIR] [extra train.ts flags for both rounds...]; --bf16 / --fp16 among
# them also go to encode.ts (bash bench/nq_recipe.sh runs/nq-bf16 --bf16).
# Environment:
#   ROUNDS=1|2                        default 2
#   ROUND2_FROM=init|round1           round two starts from the initial model (default, as Tevatron's coCondenser NQ recipe)
#                                     or continues from the round-one model
#   ROUND2_NEGATIVES=mined|mined+bm25 round two's negatives: the mined ones (default), or the mined ones and
#                                     the file's BM25 ones (mine.ts --keep_negatives)
#   QUESTIONS=N                       only the first N training questions (a short check of the pipeline)
#   NPROC=W                           encode the corpora on W processes (launch.ts), e.g. one per GPU
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data
OUT=${1:-runs/nq}; shift || true
ROUNDS=${ROUNDS:-2}
ROUND2_FROM=${ROUND2_FROM:-init}
ROUND2_NEGATIVES=${ROUND2_NEGATIVES:-mined}
NPROC=${NPROC:-1}
precision=()
for flag in "$@"; do case "$flag" in --bf16|--fp16) precision+=("$flag") ;; esac; done
[ -f "$DATA/nq/train.jsonl" ] || { echo "nq_recipe: $DATA/nq/train.jsonl is absent" >&2; exit 1; }
case "$ROUND2_FROM" in init|round1) ;; *) echo "nq_recipe: ROUND2_FROM must be init or round1, got $ROUND2_FROM" >&2; exit 1;; esac
case "$ROUND2_NEGATIVES" in mined) KEEP=();; mined+bm25) KEEP=(--keep_negatives);; *) echo "nq_recipe: ROUND2_NEGATIVES must be mined or mined+bm25, got $ROUND2_NEGATIVES" >&2; exit 1;; esac
mkdir -p "$OUT/init"
cp "$DATA/bert-base-uncased/vocab.txt" "$OUT/init/"
# BERT-mini shape (4 layers, hidden 256), random init: config only, no weights
cat > "$OUT/init/config.json" <<JSON
{"model_type": "bert", "vocab_size": 30522, "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
 "intermediate_size": 1024, "max_position_embeddings": 512, "hidden_act": "gelu", "pad_token_id": 0}
JSON
# like Tevatron's prepare scripts (--minimum-negatives 1): drop the one query that has no BM25 negative
node -e 'const fs=require("fs");const rows=fs.readFileSync(process.argv[1],"utf8").split("\n").filter(Boolean).filter(l=>JSON.parse(l).negative_passages.length>0);const n=Number(process.argv[3])||rows.length;fs.writeFileSync(process.argv[2],rows.slice(0,n).join("\n")+"\n")' \
  "$DATA/nq/train.jsonl" "$OUT/train.jsonl" "${QUESTIONS:-0}"

train() { # OUTPUT_DIR MODEL TRAIN_FILE [extra flags]
  local out=$1 model=$2 data=$3; shift 3
  npx tsx scripts/train.ts --output_dir "$out" --overwrite_output_dir --model_name_or_path "$model" \
    --train_dir "$data" --do_train --per_device_train_batch_size 32 --train_n_passages 2 \
    --learning_rate 3e-4 --weight_decay 0.01 --q_max_len 32 --p_max_len 128 --num_train_epochs 6 \
    --pooling mean --grad_cache --gc_q_chunk_size 32 --gc_p_chunk_size 16 --logging_steps 13 --save_steps 100000 --eval_queries "$DATA/nq/dev.queries.jsonl" --eval_corpus "$DATA/nq/corpus.jsonl" --eval_qrels "$DATA/nq/dev.qrels.tsv" --eval_steps 65 "$@"
}
encode_passages() { # MODEL INPUT OUTPUT.safetensors: one file, or OUTPUT.<rank>.safetensors per process
  local launch=(); [ "$NPROC" -gt 1 ] && launch=(scripts/launch.ts --nproc_per_node "$NPROC")
  npx tsx "${launch[@]}" scripts/encode.ts --model_name_or_path "$1" --encode_in_path "$2" \
    --p_max_len 128 --per_device_eval_batch_size 64 --encoded_save_path "$3" "${precision[@]}"
}
encode_queries() { # MODEL INPUT OUTPUT
  npx tsx scripts/encode.ts --model_name_or_path "$1" --encode_in_path "$2" --encode_is_qry \
    --q_max_len 32 --per_device_eval_batch_size 64 --encoded_save_path "$3" "${precision[@]}"
}
evaluate_dev() { # MODEL DIR: encode the corpus and the dev questions, search, evaluate into DIR/dev.metrics.json
  encode_passages "$1" "$DATA/nq/corpus.jsonl" "$2/corpus.safetensors"
  encode_queries "$1" "$DATA/nq/dev.queries.jsonl" "$2/dev.safetensors"
  npx tsx scripts/search.ts --query_reps "$2/dev.safetensors" --passage_reps "$2/corpus*.safetensors" --depth 100 \
    --save_ranking_to "$2/dev.run.txt"
  npx tsx scripts/evaluate.ts --run "$2/dev.run.txt" --qrels "$DATA/nq/dev.qrels.tsv" \
    --queries "$DATA/nq/dev.queries.jsonl" --corpus "$DATA/nq/corpus.jsonl" --save_json "$2/dev.metrics.json"
}

# round one: BM25 negatives
t0=$(date +%s)
train "$OUT/model" "$OUT/init" "$OUT/train.jsonl" "$@"
t1=$(date +%s)
evaluate_dev "$OUT/model" "$OUT"
t2=$(date +%s)
echo "round one: train $((t1 - t0)) s; encode + search $((t2 - t1)) s"
[ "$ROUNDS" = 2 ] || exit 0

# round two: mine the training questions' negatives with the round-one model, train again
R2=$OUT/round2
mkdir -p "$R2"
# What is searched is the training side's passages (every positive and BM25 negative of the training file,
# deduplicated by docid), where the sample's BM25 negatives were mined too: the dev corpus also holds the 275
# dev questions' gold passages, which would otherwise enter training as negatives.
node -e 'const fs=require("fs");const seen=new Map();for(const l of fs.readFileSync(process.argv[1],"utf8").split("\n").filter(Boolean)){const r=JSON.parse(l);for(const p of [...r.positive_passages,...r.negative_passages])if(!seen.has(p.docid))seen.set(p.docid,JSON.stringify({docid:p.docid,title:p.title,text:p.text}))}fs.writeFileSync(process.argv[2],[...seen.values()].join("\n")+"\n")' \
  "$OUT/train.jsonl" "$R2/passages.jsonl"
encode_passages "$OUT/model" "$R2/passages.jsonl" "$R2/passages.safetensors"
encode_queries "$OUT/model" "$OUT/train.jsonl" "$R2/train.q.safetensors"
npx tsx scripts/search.ts --query_reps "$R2/train.q.safetensors" --passage_reps "$R2/passages*.safetensors" --depth 100 \
  --save_ranking_to "$R2/train.run.txt"
npx tsx scripts/mine.ts --train_file "$OUT/train.jsonl" --ranking "$R2/train.run.txt" --corpus "$R2/passages.jsonl" \
  --save_to "$R2/train.hn.jsonl" --depth 100 --n_sample 30 "${KEEP[@]}" | tee "$R2/mine.log"
t3=$(date +%s)
[ "$ROUND2_FROM" = init ] && start=$OUT/init || start=$OUT/model
train "$R2/model" "$start" "$R2/train.hn.jsonl" "$@"
t4=$(date +%s)
evaluate_dev "$R2/model" "$R2"
t5=$(date +%s)
echo "round two ($ROUND2_NEGATIVES negatives, from $ROUND2_FROM): mine $((t3 - t2)) s; train $((t4 - t3)) s; encode + search $((t5 - t4)) s"
node -e 'const fs=require("fs");const [a,b]=process.argv.slice(1).map(f=>JSON.parse(fs.readFileSync(f,"utf8")));const f=v=>Number.isInteger(v)?String(v):v.toFixed(3);
console.log("| dev metric | round one | round two |\n| --- | --- | --- |");for(const k of Object.keys(a))console.log(`| ${k} | ${f(a[k])} | ${f(b[k])} |`)' \
  "$OUT/dev.metrics.json" "$R2/dev.metrics.json" | tee "$R2/rounds.md"
