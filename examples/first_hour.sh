#!/usr/bin/env bash
# Your own task from the command line (README "Your own task"): the same problems, reward and
# training as first_hour.py, through `sps train` and `sps eval`; about 2 minutes on a 2-core CPU.
# Run it from the repository: bash examples/first_hour.sh
set -euo pipefail
sps=${SPS:-.venv/bin/sps}
out=out/first_hour_cli
mkdir -p "$out"
for n in $(seq 10 41); do echo "{\"id\": \"d$n\", \"problem\": \"What is $n doubled?\", \"answer\": \"$((2 * n))\"}"; done > "$out/train.jsonl"
for n in $(seq 60 67); do echo "{\"id\": \"d$n\", \"problem\": \"What is $n doubled?\", \"answer\": \"$((2 * n))\"}"; done > "$out/test.jsonl"
reward="$(dirname "$0")/first_hour.py:reward"
sampling=(--prompt_template chat-answer --temperature 0.6 --max_completion_length 12 --reward_funcs "$reward")

"$sps" eval --model smollm2-135m-instruct --benchmark "$out/test.jsonl" --num_generations 4 "${sampling[@]}" --output_dir "$out/eval_base"
"$sps" train --model smollm2-135m-instruct --algorithm sps --train_data "$out/train.jsonl" --train_size 0 --eval_every -1 \
    --peft.r 8 --peft.lora_alpha 16 --learning_rate 5e-4 --prompts_per_step 4 --num_generations 4 --max_steps 6 --save_every 6 \
    "${sampling[@]}" --output_dir "$out/run"
"$sps" eval --model "$out/run" --benchmark "$out/test.jsonl" --num_generations 4 "${sampling[@]}" --output_dir "$out/eval_trained"
