"""The training configuration: one dataclass, TRL's names where users know them."""

from __future__ import annotations

from dataclasses import dataclass, fields

from sps.config import option, section


@dataclass
class SPSConfig:
    """The inverse-RL phase of SPS (docs/method.md explains each option and its default)."""

    schedule: str = option("cycle", "cycle: rl_steps RL steps then irl_steps IRL steps | joint: RL loss + joint_coef * IRL loss every step | trigger: an IRL step when trigger_statistic crosses trigger_threshold")
    rl_steps: int = option(1, "cycle: RL steps per cycle")
    irl_steps: int = option(1, "cycle: IRL steps per cycle")
    joint_coef: float = option(0.2, "joint: weight of the IRL loss added to every RL step")
    trigger_statistic: str = option("top1_share", "trigger: batch statistic that triggers an IRL step (top1_share | entropy | distinct_correct)")
    trigger_threshold: float = option(0.6, "trigger: take an IRL step when top1_share rises above it (entropy / distinct_correct: falls below it)")
    demo_source: str = option("buffer", "batch: demonstrations are this step's rollouts | buffer: the distinct correct trajectories found for the prompt in the last buffer_window steps")
    buffer_window: int = option(20, "buffer: how many steps a found trajectory stays in the buffer")
    buffer_size: int = option(8, "buffer: most distinct trajectories kept per prompt (newest kept)")
    demos: str = option("correct", "which rollouts are demonstrations: correct | all | correct_low_likelihood")
    demo_quantile: float = option(0.5, "correct_low_likelihood: keep the correct demos whose length-normalised log-likelihood is in this lowest fraction")
    dedup: bool = option(True, "count each distinct trajectory once, so a repeated dominant solution weighs no more than a rare one")
    reshape_strength: float = option(1.0, "lambda: demo weights are softmax(-lambda * score), the score set by demo_weighting; 0 = uniform, > 0 favours rare demos")
    demo_weighting: str = option("likelihood", "likelihood: score = a demo's mean token log-likelihood | frequency: score = log of how many times it was sampled (batch: in its group; buffer: since it entered the buffer) | adversarial: score = minus a learned reward, the logit of a discriminator trained to tell the demos from fresh rollouts (adversarial IRL)")
    discriminator_steps: int = option(10, "demo_weighting adversarial: full-batch Adam steps of the discriminator per IRL step")
    discriminator_learning_rate: float = option(0.05, "demo_weighting adversarial: the discriminator's Adam learning rate")
    discriminator_l2: float = option(1e-3, "demo_weighting adversarial: L2 penalty on the discriminator's weights, which bounds its reward")
    irl_tokens: str = option("all", "all: the IRL loss acts on every demo token | fork: only where a prompt's demos fork (a token the demos sharing its prefix continue differently); prompts with one demo are skipped")
    max_weight: float = option(0.5, "cap on any one demo's weight within a prompt (then renormalised)")
    prompt_weighting: str = option("uniform", "uniform: every prompt's demos weigh the same | difficulty: a prompt weighs (1 - its success rate in this step's rollouts)^difficulty_power, normalised to mean 1 over the prompts with demos")
    difficulty_power: float = option(1.0, "prompt_weighting difficulty: the power of (1 - success rate)")
    irl_mode: str = option("pull", "pull: raise the demos' likelihood (min KL(q||pi)) | push: lower the dominant ones (the paper's literal sign, bounded) | pull_push: both")
    pull_coef: float = option(1.0, "coefficient of the pull term")
    push_coef: float = option(0.1, "coefficient of the push term")
    push_floor: float = option(-1.0, "push acts only on demos whose mean token log-likelihood is above this floor")
    irl_epsilon: float = option(0.2, "trust region: per-token ratio to the rollout policy is clipped to [1 - eps, 1 + eps] in the IRL loss")
    irl_beta: float = option(0.0, "trust region: coefficient of KL(pi || pi_rollout) in the IRL loss (k3 estimator)")
    reuse_rollouts: bool = option(False, "true: an IRL update follows every rl_steps-th RL update on its rollouts (no extra generation) | false: IRL steps sample fresh rollouts and take no RL update")
    irl_learning_rate_scale: float = option(1.0, "the IRL step's learning rate as a multiple of learning_rate")


@dataclass
class AdvantageConfig:
    """Parameters of the advantage estimators and of the reward shaping (docs/baselines.md)."""

    k: int = option(4, "passk, pkpo: the k of the Pass@k objective, 1 <= k <= num_generations (Pass@k Training sweeps 4/8/16 at G = 32; PKPO 1/2/4/8 at G = 16)")
    k_final: int = option(1, "passk, pkpo: k from k_switch_step on (PKPO anneals k 8 -> 1)")
    k_switch_step: int = option(0, "passk, pkpo: the step from which k_final replaces k (0 = never; PKPO switches at step 1500)")
    positive_weight: float = option(0.1, "w_reinforce: lambda, the advantage of a correct rollout (a wrong one gets -1; 0 = NSR)")
    focal_gamma: float = option(0.0, "F-GRPO on top of any estimator: multiply a prompt's advantages by (1 - its success rate)^gamma (0 = off; the authors mostly use 0.5)")
    rank_penalty: float = option(0.0, "unlikeliness reward: a correct rollout's reward becomes 1 - rank_penalty * rank / G, rank 0 = least likely in its group (0 = off; the authors use 0.25)")
    rank_mixed_groups_only: bool = option(True, "unlikeliness reward: shape only groups with both correct and wrong rollouts (the authors' filter)")
    outcome_bonus: str = option("none", "outcome-based exploration on top of any estimator, added to the advantages: ucb_con: c (1/sqrt(N) - b0), N the times the problem's final answer was sampled in earlier steps | ucb_mean: c (1/sqrt(N) - its group mean) | batch: -c x the share of the group's other rollouts with the same answer | none")
    outcome_bonus_coef: float = option(0.2, "outcome_bonus: c (the authors' 0.2)")
    outcome_bonus_baseline: float = option(0.5, "outcome_bonus ucb_con: b0 (the authors' 0.5 on DAPO data, 1 on MATH)")


@dataclass
class PolicyLossConfig:
    """Parameters of the policy losses chosen by loss_mode (docs/baselines.md; verl's names)."""

    simko_top_k: int = option(3, "simko: K, candidate tokens that share the push at high-entropy tokens")
    simko_entropy_quantile: float = option(0.8, "simko: tau, tokens above this per-completion entropy quantile are 'high-entropy'")
    simko_alpha: float = option(0.01, "simko: alpha (mix_topk_coef), the share of a correct token's push moved to its top-K candidates")
    clip_cov_ratio: float = option(2e-4, "clip_cov: fraction of tokens whose gradient is cut (at least 1 per micro-batch)")
    clip_cov_lb: float = option(1.0, "clip_cov: lower bound of the covariance band the cut tokens are drawn from")
    clip_cov_ub: float = option(5.0, "clip_cov: upper bound of that band")
    kl_cov_ratio: float = option(2e-3, "kl_cov: fraction of tokens (largest covariance) that get the KL penalty (authors' 7B runs 0.2% = 2e-3; verl's default 2e-4)")
    ppo_kl_coef: float = option(1.0, "kl_cov: coefficient of |log pi - log pi_old| on those tokens")
    dph_coef: float = option(0.01, "dph: coefficient of the forward KL (k3) to the start model on correct rollouts")
    top_entropy_quantile: float = option(0.2, "top_entropy (the 80/20 forking-token loss): rho, the share of the micro-batch's valid tokens, those of highest entropy ranked together, that keep their policy gradient (rounded up; the loss is their mean; the authors' 0.2; TRL's name)")
    archer_entropy_quantile: float = option(0.8, "archer: a completion's tokens above this quantile of its entropies are high-entropy (looser clip, no KL)")
    archer_high_epsilon: float = option(0.5, "archer: clip range of high-entropy tokens, both sides (low-entropy tokens keep epsilon)")
    archer_kl_coef: float = option(0.001, "archer: coefficient of the k3 KL to the start model, averaged over each completion's low-entropy tokens")
    dual_clip: float = option(10.0, "archer, top_entropy: dual-clip c, a negative-advantage token's loss is at most -c A (0 = off; both authors' 10)")
    flowrl_beta: float = option(15.0, "flowrl: beta, the advantage's scale in the trajectory-balance residual (the authors' literal)")
    flowrl_weight_cap: float = option(10.0, "flowrl: the importance weight of a completion is at most this, with no lower bound (the authors' recipe's 10)")
    flowrl_head_layers: int = option(3, "flowrl: Linear layers of the log Z head on the prompt's mean hidden state (the authors' ProjZ)")


@dataclass
class AdaptiveEntropyConfig:
    """Skywork-OR1's adaptive entropy coefficient (TRL's use_adaptive_entropy); starts from entropy_coef."""

    enabled: bool = option(False, "steer the entropy bonus's coefficient to keep the sampled-token entropy near target")
    target: float = option(0.2, "target entropy (nats per token, -mean log-prob of the sampled tokens)")
    delta: float = option(1e-4, "change of the coefficient per step (TRL's default 0.005)")
    coef_min: float = option(0.0, "lowest coefficient")
    coef_max: float = option(5e-3, "highest coefficient (TRL's default 1.0)")


@dataclass
class PeftConfig:
    """LoRA adapters through the peft library (peft's names); r 0 trains every weight."""

    r: int = option(0, "LoRA rank (0 = no adapters: full fine-tuning)")
    lora_alpha: float = option(16.0, "LoRA scaling alpha (the update is alpha / r times B A)")
    lora_dropout: float = option(0.0, "dropout on the adapters' input")
    target_modules: list[str] = option([], "module names that get adapters, e.g. q_proj,k_proj,v_proj,o_proj (empty: peft's default for the architecture)")


# A LoraConfig's fields that say nothing about the adapters sps trains (peft and TRL fill them in).
LORA_BOOKKEEPING = {"r", "lora_alpha", "lora_dropout", "target_modules", "task_type", "peft_type", "inference_mode",
                    "base_model_name_or_path", "revision", "auto_mapping"}


def as_peft_config(value) -> PeftConfig:
    """A PeftConfig as it is; peft's LoraConfig, as TRL users pass it (peft_config=LoraConfig(...)),
    read into one. A LoraConfig setting that sps would not honour is an error naming it."""
    if isinstance(value, PeftConfig):
        return value
    if type(value).__name__ != "LoraConfig":
        raise ValueError(f"peft must be sps.PeftConfig or peft.LoraConfig (got {type(value).__name__})")
    default = type(value)()
    unsupported = [f"{f.name}={getattr(value, f.name)!r}" for f in fields(value)
                   if f.name not in LORA_BOOKKEEPING and getattr(value, f.name) != getattr(default, f.name)]
    if unsupported:
        raise ValueError(f"peft_config: sps trains a LoraConfig's r, lora_alpha, lora_dropout and target_modules; "
                         f"{', '.join(unsupported)} is not supported")
    targets = value.target_modules
    targets = [] if targets is None else [targets] if isinstance(targets, str) else sorted(targets)
    return PeftConfig(r=value.r, lora_alpha=float(value.lora_alpha), lora_dropout=value.lora_dropout, target_modules=targets)


@dataclass
class TrainConfig:
    """Everything a training run depends on. `sps train --help` lists these with their defaults."""

    # What to train, on what.
    model: str = option("", "policy to start from: a folder, a hub id, smollm2-135m-instruct, or 'testbed' for the built-in testbed model")
    plugins: list[str] = option([], "your own methods: Python files (path/to/my_method.py) or modules (my_package.methods) imported before the settings are checked, so what they register is a valid choice (sps.plugins; examples/my_method.py)")
    algorithm: str = option("grpo", "grpo | sps")
    train_data: str = option("countdown-train", "training prompts: a benchmark name (math_train, gsm8k_train, countdown-train), a JSON Lines path, hf:owner/name[:split] or rg:<task>[?settings] (a reasoning-gym generator, e.g. rg:chain_sum?max_terms=2)")
    train_size: int = option(512, "prompt_mode fixed: size of the fixed training set revisited over epochs (0 = all problems)")
    prompt_mode: str = option("fixed", "fixed: shuffled epochs over a fixed set of train_size problems | stream: fresh problems, no reuse until the split is exhausted")
    prompt_template: str = option("", "qwen-boxed | chat | chat-answer (answer only, one example exchange) | plain (empty: the data's default)")
    grader: str = option("", "math | choice | countdown | reasoning_gym (empty: the data's default); the reward when reward_funcs is empty")
    reward_funcs: list[str] = option([], "the rewards, summed: grader names and functions as package.module:function or path/to/file.py:function, called TRL's way (docs/python.md; empty: the grader)")
    reward_weights: list[float] = option([], "a weight per reward_funcs entry (empty: all 1)")
    success_threshold: float = option(1.0, "a rollout succeeds when its reward is at least this: what Pass@k counts, SPS's demonstrations, and the 0/1 outcome of passk, w_reinforce, simko, dph, focal and the unlikeliness reward")
    max_reward_failures: int = option(0, "reward-function failures (raised, timed out, wrong length, NaN, not a number) allowed per step; each failed rollout is left out of the loss and counted; more stop the run")
    reward_timeout: float = option(60.0, "seconds a reward function may take for one prompt's completions before its worker is killed")
    reward_memory_limit: float = option(4.0, "GiB of memory each reward-function worker may hold (its heap and other writable data, RLIMIT_DATA); a call that needs more fails, named, and its worker is replaced")
    data_dir: str = option("", "benchmark data folder (empty: $SPS_DATA_DIR or ../shared/data)")

    # Rollouts.
    prompts_per_step: int = option(32, "prompts sampled per step (across all processes)")
    num_generations: int = option(16, "G: completions per prompt")
    max_completion_length: int = option(48, "most tokens per completion")
    temperature: float = option(1.0, "sampling temperature (the policy's log-probs are taken at this temperature)")
    top_p: float = option(1.0, "nucleus sampling threshold")
    engine: str = option("hf", "rollout engine: hf | vllm")
    generation_batch_size: int = option(512, "most sequences sampled together")
    vllm_sleep: bool = option(False, "engine vllm, GPU only: free vLLM's GPU memory between rollouts (weights offloaded, KV cache dropped)")

    # The RL update.
    learning_rate: float = option(1e-4, "AdamW learning rate")
    weight_decay: float = option(0.0, "AdamW weight decay")
    adam_beta1: float = option(0.9, "AdamW beta1")
    adam_beta2: float = option(0.99, "AdamW beta2")
    warmup_steps: int = option(0, "linear learning-rate warm-up steps (then constant)")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0 = off)")
    advantage_estimator: str = option("grpo", "grpo: group mean baseline | rloo: leave-one-out baseline | passk: Pass@k Training's analytical advantage | pkpo: PKPO's s^(loo-1) | grpo_passk: best-of-group (Tang et al.) | w_reinforce: +lambda / -1 | max_rl: (r - mean) / mean (advantage.*; docs/baselines.md)")
    scale_rewards: str = option("group", "divide advantages by the std of the group | batch | none (Dr. GRPO)")
    loss_type: str = option("dapo", "aggregation: dapo (token mean) | grpo (sequence mean of token means) | dr_grpo (token sum / constant)")
    epsilon: float = option(0.2, "lower clip range of the ratio")
    epsilon_high: float = option(0.0, "upper clip range (0 = same as epsilon; DAPO's clip-higher uses 0.28)")
    beta: float = option(0.0, "KL(pi || reference) coefficient, k3 estimator; 0 loads no reference model")
    entropy_coef: float = option(0.0, "entropy bonus coefficient (the starting one under adaptive_entropy)")
    author_settings: bool = option(True, "apply the chosen policy loss's authors' general settings (its preset: loss_type, group filtering, ...; docs/baselines.md) to those left at their defaults, each stated in the log")
    loss_mode: str = option("vanilla", "policy loss: vanilla (PPO clip) | simko | clip_cov | kl_cov | dph | top_entropy (80/20 forking tokens) | archer | flowrl (trajectory balance with a learned log Z; policy_loss.*; docs/baselines.md)")
    num_iterations: int = option(1, "PPO epochs over each batch of rollouts")
    steps_per_generation: int = option(2, "minibatches (one optimizer step each) per epoch over a batch of rollouts")
    micro_batch_size: int = option(0, "most sequences per forward/backward (0 = 64, or no limit under max_tokens_per_microbatch); lower it to save memory")
    max_tokens_per_microbatch: int = option(0, "most padded tokens (rows x (prompt + longest completion)) per forward/backward; rows sorted by length fill each up to it, so short rows go many at a time and long ones few (0 = off; verl's ppo_max_token_len_per_gpu)")
    mask_truncated_completions: bool = option(False, "leave completions cut off at max_completion_length out of the loss")
    drop_zero_variance_groups: bool = option(False, "DAPO dynamic sampling: leave groups with equal rewards out of the loss normaliser")
    replay_buffer: bool = option(False, "a control for SPS: add each prompt's buffered distinct correct trajectories (sps.buffer_window, sps.buffer_size) to the RL batch with advantage replay_advantage")
    replay_advantage: float = option(1.0, "replay_buffer: the advantage of a replayed trajectory")
    recompute_old_logprobs: bool = option(False, "recompute the rollout policy's log-probs with the training forward pass instead of taking the engine's")

    # The run.
    seed: int = option(0, "seed for prompts, sampling and initialisation")
    max_steps: int = option(100, "training steps (each samples a fresh batch of rollouts)")
    eval_every: int = option(0, "evaluate on eval_benchmark every this many steps and at the end (0 = only at the end; negative = never)")
    eval_benchmark: str = option("countdown-val", "held-out benchmark for evaluations during training; left at this default with train_data other than the testbed's, the evaluations use eval_split rows held out of train_data instead")
    eval_split: int = option(0, "rows held out of train_data for evaluations when eval_benchmark is left at its default and train_data is not the testbed's (0: a tenth of them, 1 to 200)")
    eval_limit: int = option(200, "problems evaluated (0 = all)")
    eval_n: int = option(16, "samples per problem in evaluations")
    eval_temperature: float = option(1.0, "sampling temperature of evaluations")
    probe_problems: int = option(32, "held-out problems whose correct base-model trajectories are tracked as probes (0 = none)")
    save_every: int = option(50, "checkpoint every this many steps (and at the end)")
    keep_checkpoints: int = option(2, "how many checkpoints to keep, the newest (0 = keep every one)")
    keep_best: bool = option(False, "also keep the policy with the best eval Avg@n (mean over eval_benchmark) in <output_dir>/best/")
    output_dir: str = option("out/train", "run folder: config, log, evaluations, checkpoints")
    report_to: list[str] = option([], "extra loggers besides the JSON Lines log: tensorboard, wandb")
    dtype: str = option("auto", "what forward and backward compute in: auto (bf16 on a GPU that supports it, else fp32) | float32 | bfloat16; the weights and AdamW's state stay fp32 (mixed precision: autocast on one process, FSDP2's policy under torchrun)")
    device: str = option("", "cpu, cuda, cuda:1, ... (empty: cuda when available)")
    threads: int = option(0, "torch CPU threads (0 = torch's default)")
    max_nonfinite_steps: int = option(3, "stop after this many consecutive updates with a NaN or infinite loss")

    # Memory and several processes (torchrun; docs/scale.md).
    parallelism: str = option("fsdp", "with several processes: fsdp shards weights, gradients and optimizer state across them (FSDP2) | ddp keeps a full copy on each and all-reduces gradients")
    logits_chunk_size: int = option(0, "tokens per chunk through the LM head when computing log-probs, entropy and top-K from the final hidden states, so the full logits are never held (0 = automatic: about 2^26 logits, 256 MiB of float32, per chunk; -1 = the whole logits at once, the path before, kept for comparison)")
    gradient_checkpointing: bool = option(False, "recompute each layer's activations in backward instead of storing them (less memory, about a third more compute)")
    cpu_offload: bool = option(False, "keep the sharded weights, gradients and optimizer state in CPU memory; the optimizer step runs on the CPU (FSDP2; needs torchrun)")

    advantage: AdvantageConfig = section(AdvantageConfig, "advantage estimators and reward shaping (advantage_estimator)")
    policy_loss: PolicyLossConfig = section(PolicyLossConfig, "policy losses (loss_mode)")
    adaptive_entropy: AdaptiveEntropyConfig = section(AdaptiveEntropyConfig, "adaptive entropy bonus")
    sps: SPSConfig = section(SPSConfig, "the IRL phase (algorithm: sps)")
    peft: PeftConfig = section(PeftConfig, "LoRA adapters (peft.r > 0): only the adapters train; the reference is the base with them off")
