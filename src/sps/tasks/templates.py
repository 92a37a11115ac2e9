"""Prompt templates: how a problem statement becomes model input."""

from __future__ import annotations

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

# The Qwen2.5-Math evaluation format: the instruction as the system turn, the problem as the user turn.
QWEN_BOXED = (
    "<|im_start|>system\n" + INSTRUCTION + "<|im_end|>\n"
    "<|im_start|>user\n{problem}<|im_end|>\n"
    "<|im_start|>assistant\n"
)

TEMPLATES = ("qwen-boxed", "chat", "plain")


def render_prompt(template: str, problem: str, tokenizer) -> str:
    """The prompt text for one problem.

    qwen-boxed: the Qwen2.5-Math format above, whatever the model.
    chat:       the model's own chat template with the problem and the boxed-answer instruction as
                the user turn.
    plain:      the problem text unchanged (the built-in testbed uses this).
    """
    if template == "qwen-boxed":
        return QWEN_BOXED.replace("{problem}", problem)
    if template == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt template 'chat' needs a tokenizer with a chat template; this one has none")
        messages = [{"role": "user", "content": f"{problem}\n{INSTRUCTION}"}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if template == "plain":
        return problem
    raise ValueError(f"unknown prompt template {template!r}; choose one of {', '.join(TEMPLATES)}")


def encode_prompt(template: str, problem: str, tokenizer) -> list[int]:
    """Token ids of the rendered prompt. A chat template already writes any BOS token itself."""
    text = render_prompt(template, problem, tokenizer)
    return tokenizer(text, add_special_tokens=template != "chat").input_ids
