"""Prompt templates: how a problem statement becomes model input."""

from __future__ import annotations

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
# For small chat models that ramble when asked to reason (SmolLM2-135M; docs/real-model.md).
ANSWER_ONLY = "Give only the final answer, in \\boxed{}."
# Without an example, SmolLM2-135M puts the answer in a box in under a fifth of its replies.
ANSWER_EXAMPLE = [
    {"role": "user", "content": f"What is 3 + 4?\n{ANSWER_ONLY}"},
    {"role": "assistant", "content": "\\boxed{7}"},
]

# The Qwen2.5-Math evaluation format: the instruction as the system turn, the problem as the user turn.
QWEN_BOXED = (
    "<|im_start|>system\n" + INSTRUCTION + "<|im_end|>\n"
    "<|im_start|>user\n{problem}<|im_end|>\n"
    "<|im_start|>assistant\n"
)

TEMPLATES = ("qwen-boxed", "chat", "chat-answer", "plain")
# template -> (example turns, instruction after the problem)
CHAT_TEMPLATES = {"chat": ([], INSTRUCTION), "chat-answer": (ANSWER_EXAMPLE, ANSWER_ONLY)}


def render_prompt(template: str, problem: str, tokenizer) -> str:
    """The prompt text for one problem.

    qwen-boxed: the Qwen2.5-Math format above, whatever the model.
    chat:       the model's own chat template with the problem and the boxed-answer instruction as
                the user turn.
    chat-answer: the model's chat template with one example exchange that shows the answer format
                (ANSWER_EXAMPLE), then the problem, asking for only the final answer in \\boxed{}.
    plain:      the problem text unchanged (the built-in testbed uses this).
    """
    if template == "qwen-boxed":
        return QWEN_BOXED.replace("{problem}", problem)
    if template in CHAT_TEMPLATES:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"prompt template {template!r} needs a tokenizer with a chat template; this one has none")
        example, instruction = CHAT_TEMPLATES[template]
        messages = [*example, {"role": "user", "content": f"{problem}\n{instruction}"}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if template == "plain":
        return problem
    raise ValueError(f"unknown prompt template {template!r}; choose one of {', '.join(TEMPLATES)}")


def encode_prompt(template: str, problem: str, tokenizer) -> list[int]:
    """Token ids of the rendered prompt. A chat template already writes any BOS token itself."""
    text = render_prompt(template, problem, tokenizer)
    return tokenizer(text, add_special_tokens=template not in CHAT_TEMPLATES).input_ids
