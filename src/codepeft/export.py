"""`codepeft export RUN --merged OUT`: one standalone transformers model (for vLLM, TGI or plain
`from_pretrained`) from a finished run, where the method allows it.

- full fine-tuning: the run's weights are already a model; they are written out as they are;
- peft tuners that change weights (LoRA, DoRA, (IA)3, LoHa, LoKr, OFT, ...): the adapter is
  merged into the base with peft's `merge_and_unload`. A quantised base (QLoRA, an 8-bit base) is
  reloaded unquantised first and merged in the precision the run trained in: merging into 4/8-bit
  weights would round the update away, so the merged model computes as the adapter on a full
  precision base, which differs slightly from the quantised model the run evaluated (said);
- prompt tuning, prefix tuning and P-tuning add virtual tokens, not weights, and codepeft's
  bottleneck adapters add non-linear layers: nothing can be merged, and the refusal says so.

The merged model is checked before it is written: its logits on a fixed input equal those of
base + adapter (the largest difference is printed and kept in the model card).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from codepeft.errors import CodepeftError

TOLERANCE = 1e-3  # largest logit difference merged vs unmerged accepted (float rounding of the merge)

NOT_MERGEABLE = {
    "prompt": "adds virtual tokens in front of the input, not weights: there is nothing to merge",
    "adapter": "adds bottleneck layers (with a non-linearity) between the base's layers: they cannot be "
    "folded into its weights",
}


def export_merged(run_dir: str | Path, out: str | Path) -> dict:
    """Write the run's merged model to `out`; returns what was done."""
    import torch

    from codepeft.config import ModelSpec
    from codepeft.models.loading import load_model
    from codepeft.training.artifacts import ADAPTER_DIR, MODEL_DIR, finished_run_info

    run_dir, out = Path(run_dir), Path(out)
    info = finished_run_info(run_dir)
    if out.exists() and any(out.iterdir()):
        raise CodepeftError(f"{out} exists and is not empty; give a new directory")
    family, name = info["method"]["family"], info["method"]["name"]
    if family in NOT_MERGEABLE or name in ("prompt", "prefix", "ptuning"):
        why = NOT_MERGEABLE.get(family, NOT_MERGEABLE["prompt"])
        raise CodepeftError(
            f"{name} {why}. Serve the base model with the adapter ({run_dir / ADAPTER_DIR}) through peft instead "
            "(`codepeft eval` does)."
        )
    if (run_dir / MODEL_DIR).is_dir():  # full fine-tuning: already one model
        shutil.copytree(run_dir / MODEL_DIR, out, dirs_exist_ok=True)
        return {"method": name, "merged": False, "out": str(out), "note": "full fine-tuning: the weights as trained"}

    from peft import PeftModel

    dtype = info.get("precision", {}).get("weights", "fp32")
    spec = ModelSpec(**{**info["config"]["model"], "device": "cpu", "quantization": "none", "dtype": dtype})
    spec.name_or_path = info["base_model"]
    base, tokenizer = load_model(spec)
    tuned = PeftModel.from_pretrained(base, run_dir / ADAPTER_DIR).eval()
    probe = torch.arange(3, 3 + 16).unsqueeze(0) % tokenizer.vocab_size
    with torch.no_grad():
        expected = tuned(input_ids=probe).logits.float()
        merged = tuned.merge_and_unload().eval()
        got = merged(input_ids=probe).logits.float()
    difference = (got - expected).abs().max().item()
    if difference > TOLERANCE:
        raise CodepeftError(
            f"the merged {name} model's logits differ from base + adapter by {difference:.2g} (> {TOLERANCE}); "
            "nothing written"
        )
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
    note = f"adapter merged into the base in {dtype}; logits equal base + adapter to {difference:.1e}"
    if info.get("quantization", "none") != "none":
        note += (
            f" (the run trained on a {info['quantization']} base; the merged model is unquantised, so it differs "
            "slightly from the quantised model the run evaluated)"
        )
    from codepeft.training.model_card import write_model_card

    write_model_card(out, info, json.loads((run_dir / "cost.json").read_text()), merged=note)
    return {"method": name, "merged": True, "out": str(out), "max_logit_difference": difference, "note": note}
