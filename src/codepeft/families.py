"""Method families, and the one spelling of zero-shot.

Here rather than in `codepeft.methods` (which imports peft and torch) because the study
config, the results store and the report name families without loading any model code.
"""

from enum import StrEnum


class MethodFamily(StrEnum):
    """What a method changes; the order is the order of `codepeft methods` and of the report."""

    FULL = "full"  # every weight
    LORA = "lora"  # low-rank deltas (LoRA, QLoRA, DoRA)
    IA3 = "ia3"  # activation scaling vectors
    PROMPT = "prompt"  # virtual tokens or prefixes in front of the input
    ADAPTER = "adapter"  # codepeft's bottleneck adapters
    PEFT = "peft"  # any other peft tuner
    BASELINE = "baseline"  # a prompting baseline (ICL, RAG): trains nothing
    ZERO_SHOT = "zero-shot"  # the model as it is (no registry entry: the study's `zero-shot` method)


ZERO_SHOT = MethodFamily.ZERO_SHOT.value  # the one spelling, as a method name and as a family
