"""Your own task from Python (docs/python.md): problems you wrote, a reward you wrote, SmolLM2-135M-Instruct,
SPS with LoRA adapters; about 2 minutes on a 2-core CPU. Run it: .venv/bin/python examples/first_hour.py"""

from pathlib import Path

from sps import PeftConfig, TrainConfig, evaluate, train


def reward(completions, answer, **_):  # TRL's convention: one float per completion; partial credit for a near miss
    guesses = [c.replace("\\boxed{", "").replace("}", "").strip().rstrip(".") for c in completions]
    return [1.0 if g == a else max(0.0, 0.5 - abs(int(g) - int(a)) / 20) if g.isdecimal() else 0.0 for g, a in zip(guesses, answer)]


def write(path: Path, numbers) -> str:  # the columns sps needs: id, problem, answer (more columns reach the reward)
    path.write_text("".join(f'{{"id": "d{n}", "problem": "What is {n} doubled?", "answer": "{2 * n}"}}\n' for n in numbers))
    return str(path)


if __name__ == "__main__":  # reward workers import this file: the work starts only when it is run
    out = Path("out/first_hour")
    out.mkdir(parents=True, exist_ok=True)
    train_file, test_file = write(out / "train.jsonl", range(10, 42)), write(out / "test.jsonl", range(60, 68))
    sampling = dict(prompt_template="chat-answer", temperature=0.6, max_completion_length=12, reward_funcs=reward)
    before = evaluate("smollm2-135m-instruct", test_file, out / "eval_base", n=4, **sampling)
    run = train(TrainConfig(
        model="smollm2-135m-instruct", algorithm="sps", train_data=train_file,
        train_size=0, eval_every=-1,  # a small dataset: train on all of it; evaluate below instead of during training
        peft=PeftConfig(r=8, lora_alpha=16), learning_rate=5e-4, prompts_per_step=4, num_generations=4, max_steps=6, save_every=6,
        output_dir=str(out / "run"), **{k: v for k, v in sampling.items() if k != "reward_funcs"}, reward_funcs=[reward]))
    after = evaluate(run, test_file, out / "eval_trained", n=4, **sampling)
    print(f"mean reward {before['mean_reward']:.3f} -> {after['mean_reward']:.3f}, "
          f"Pass@4 {before['pass_at_k'][4]:.3f} -> {after['pass_at_k'][4]:.3f}")
