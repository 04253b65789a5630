"""MathGPT: how much LoRA fine-tuning does an open LLM need before its math gets better?

Modules, in the order data flows:
data -> synthetic -> prompts -> model -> train -> generate -> checker -> evaluate -> track -> run -> sweep -> report
"""

__version__ = "0.1.0"
