#!/usr/bin/env bash
# The NQ recipe end to end on the shared data (../shared/data/nq): a small BERT trained from scratch on
# 2,106 NQ training questions, the 2,588-passage corpus encoded, the 275 held-out questions searched and
# evaluated. Usage: bash bench/nq_recipe.sh [OUT_DIR] [extra train.ts flags...]; --bf16 / --fp16 among
# them also go to encode.ts (bash bench/nq_recipe.sh runs/nq-bf16 --bf16).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data
OUT=${1:-runs/nq}; shift || true
precision=()
for flag in "$@"; do case "$flag" in --bf16|--fp16) precision+=("$flag") ;; esac; done
[ -f "$DATA/nq/train.jsonl" ] || { echo "nq_recipe: $DATA/nq/train.jsonl is absent" >&2; exit 1; }
mkdir -p "$OUT/init"
cp "$DATA/bert-base-uncased/vocab.txt" "$OUT/init/"
# BERT-mini shape (4 layers, hidden 256), random init: config only, no weights
cat > "$OUT/init/config.json" <<JSON
{"model_type": "bert", "vocab_size": 30522, "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
 "intermediate_size": 1024, "max_position_embeddings": 512, "hidden_act": "gelu", "pad_token_id": 0}
JSON
# like Tevatron's prepare scripts (--minimum-negatives 1): drop the one query that has no BM25 negative
node -e 'const fs=require("fs");const rows=fs.readFileSync(process.argv[1],"utf8").split("\n").filter(Boolean);fs.writeFileSync(process.argv[2],rows.filter(l=>JSON.parse(l).negative_passages.length>0).join("\n")+"\n")' \
  "$DATA/nq/train.jsonl" "$OUT/train.jsonl"
t0=$(date +%s)
npx tsx scripts/train.ts --output_dir "$OUT/model" --overwrite_output_dir --model_name_or_path "$OUT/init" \
  --train_dir "$OUT/train.jsonl" --do_train --per_device_train_batch_size 32 --train_n_passages 2 \
  --learning_rate 3e-4 --weight_decay 0.01 --q_max_len 32 --p_max_len 128 --num_train_epochs 6 \
  --pooling mean --grad_cache --gc_q_chunk_size 32 --gc_p_chunk_size 16 --logging_steps 13 --save_steps 100000 --eval_queries "$DATA/nq/dev.queries.jsonl" --eval_corpus "$DATA/nq/corpus.jsonl" --eval_qrels "$DATA/nq/dev.qrels.tsv" --eval_steps 65 "$@"
t1=$(date +%s)
npx tsx scripts/encode.ts --model_name_or_path "$OUT/model" --encode_in_path "$DATA/nq/corpus.jsonl" \
  --p_max_len 128 --per_device_eval_batch_size 64 --encoded_save_path "$OUT/corpus.safetensors" "${precision[@]}"
npx tsx scripts/encode.ts --model_name_or_path "$OUT/model" --encode_in_path "$DATA/nq/dev.queries.jsonl" --encode_is_qry \
  --q_max_len 32 --per_device_eval_batch_size 64 --encoded_save_path "$OUT/dev.safetensors" "${precision[@]}"
npx tsx scripts/search.ts --query_reps "$OUT/dev.safetensors" --passage_reps "$OUT/corpus.safetensors" --depth 100 \
  --save_ranking_to "$OUT/dev.run.txt"
t2=$(date +%s)
npx tsx scripts/evaluate.ts --run "$OUT/dev.run.txt" --qrels "$DATA/nq/dev.qrels.tsv" \
  --queries "$DATA/nq/dev.queries.jsonl" --corpus "$DATA/nq/corpus.jsonl" --save_json "$OUT/dev.metrics.json"
echo "train $((t1 - t0)) s; encode + search $((t2 - t1)) s"
