"""SmolLM2-135M-Instruct with LoRA, on problems you wrote and a reward you wrote (docs/python.md)."""

from pathlib import Path

from sps import PeftConfig, TrainConfig, evaluate, train


def reward(completions, answer, **_):  # TRL's convention; 1 for the right sum, partial credit for a near miss
    guesses = [c.replace("\\boxed{", "").replace("}", "").strip().rstrip(".") for c in completions]
    return [1.0 if g == a else max(0.0, 0.5 - abs(int(g) - int(a)) / 20) if g.isdecimal() else 0.0 for g, a in zip(guesses, answer)]


def write(path, pairs):
    path.write_text("".join(f'{{"id": "{a}+{b}", "problem": "What is {a} + {b}?", "answer": "{a + b}"}}\n' for a, b in pairs))


if __name__ == "__main__":  # grading workers import this file: the work starts only when it is run
    out = Path("out/lora_own_reward")
    out.mkdir(parents=True, exist_ok=True)
    pairs = [(a, b) for a in range(10, 40) for b in range(10, 40)]
    write(out / "train.jsonl", pairs[::3]), write(out / "test.jsonl", pairs[1::9])
    settings = dict(prompt_template="chat-answer", temperature=0.6, max_new_tokens=16, n=8, reward_funcs=[reward])
    before = evaluate("smollm2-135m-instruct", str(out / "test.jsonl"), out / "eval_base", **settings)
    run = train(TrainConfig(model="smollm2-135m-instruct", train_data=str(out / "train.jsonl"), train_size=0, reward_funcs=[reward],
                            peft=PeftConfig(r=16, lora_alpha=32), learning_rate=5e-4, prompt_template="chat-answer", temperature=0.6,
                            prompts_per_step=8, num_generations=8, max_completion_length=16, steps_per_generation=1,
                            max_steps=30, eval_every=-1, save_every=30, output_dir=str(out / "run")))
    after = evaluate(run, str(out / "test.jsonl"), out / "eval_trained", **settings)
    print(f"mean reward {before['mean_reward']:.3f} -> {after['mean_reward']:.3f}, Pass@1 {before['pass_at_k'][1]:.3f} -> {after['pass_at_k'][1]:.3f}")
