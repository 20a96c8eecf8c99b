"""Several runs and models of one base evaluated together (codepeft.evaluation_together): LoRA
adapters and the base share mixed-adapter batches, the rest are evaluated one at a time, and
every result is the one separate evaluation writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codepeft.evaluation import evaluate, without_timings
from codepeft.evaluation_together import Target, evaluate_together, mixable_adapter, shareable
from codepeft.generation import GenerationSettings, HFBackend

TASKS = ["humaneval", "stdlib-instruct-loss"]


@pytest.fixture(scope="module")
def runs(tiny_model, tmp_path_factory):
    """Two LoRA runs that differ (random, not zero, B matrices) and one (IA)3 run of one base."""
    from codepeft import load_config, train

    root = tmp_path_factory.mktemp("together")
    data = root / "train.jsonl"
    data.write_text(
        "".join(
            json.dumps({"instruction": f"Write f{i}.", "output": f"def f{i}():\n    return {i}\n"}) + "\n"
            for i in range(8)
        )
    )
    base = str(tiny_model("llama"))
    made = {}
    for name, method, seed in [("lora0", "lora", 0), ("lora1", "lora", 1), ("ia3", "ia3", 0)]:
        options = ["method.init_lora_weights=false"] if method == "lora" else []
        config = load_config(
            None,
            [
                f"model.name_or_path={base}",
                f"method.name={method}",
                *options,
                f"seed={seed}",
                f"data.train.0.source={data}",
                "data.max_length=64",
                "train.max_steps=1",
                "data.format=octocoder",
            ],
        )
        made[name] = str(train(config, root / name).run_dir)
    return base, made


def _targets(base, made, out, settings):
    return [
        Target(base, out / "zero-shot", settings),
        Target(made["lora0"], out / "lora0", settings),
        Target(made["lora1"], out / "lora1", settings.__class__(**{**settings.__dict__, "seed": 1})),
        Target(made["ia3"], out / "ia3", settings),
        Target(base, out / "icl", settings, method="icl", method_options={"shots": 1, "seeds": 1}),
    ]


def _comparable(result: dict) -> dict:
    """A result as its JSON file holds it, less its wall-clock times."""
    return without_timings(json.loads(json.dumps(result)))


def test_together_gives_what_separate_evaluation_gives(runs, tmp_path, monkeypatch):
    base, made = runs
    settings = GenerationSettings(n=2, temperature=0.8, max_new_tokens=20, batch_size=2)
    targets = _targets(base, made, tmp_path / "together", settings)
    groups, alone = shareable(targets)
    assert [members for _, members in groups] == [[0, 1, 2, 4]] and alone == [3]  # (IA)3 cannot mix
    assert mixable_adapter(Path(made["lora0"]) / "adapter")

    mixed_batches = []
    original = HFBackend.generate_batch

    def recording(self, texts, settings, adapters=None, seeds=None):
        if adapters is not None:
            mixed_batches.append(sorted(set(adapters)))
        return original(self, texts, settings, adapters, seeds)

    monkeypatch.setattr(HFBackend, "generate_batch", recording)
    together = evaluate_together(targets, TASKS, [1, 2], limit=3, prompt_format="octocoder")
    monkeypatch.undo()
    assert not any(isinstance(r, Exception) for r in together), together
    # the base's rows and both adapters' rows went through one batch
    assert ["__base__", "member1", "member2"] in mixed_batches

    for t, got in zip(targets, together, strict=True):
        alone_dir = tmp_path / "alone" / t.output_dir.name
        want = evaluate(
            t.target,
            TASKS,
            t.settings,
            [1, 2],
            limit=3,
            output_dir=alone_dir,
            prompt_format="octocoder",
            method=t.method,
            method_options=t.method_options,
        )
        for task in TASKS:
            assert _comparable(got[task]) == _comparable(want[task]), (t.output_dir.name, task)
            on_disk = json.loads((t.output_dir / f"{task}.json").read_text())
            assert _comparable(on_disk) == _comparable(want[task])
    completions = {
        t.output_dir.name: [s["completion"] for p in r["humaneval"]["problems"] for s in p["samples"]]
        for t, r in zip(targets, together, strict=True)
    }
    # the adapters really differ from each other and from the base, so a row through the wrong
    # adapter would show above
    assert len({tuple(completions[k]) for k in ("zero-shot", "lora0", "lora1")}) == 3


def test_one_members_failure_is_its_own(runs, tmp_path, monkeypatch):
    base, made = runs
    settings = GenerationSettings(max_new_tokens=8, batch_size=2)
    targets = [Target(base, tmp_path / "zero-shot", settings), Target(made["lora0"], tmp_path / "lora0", settings)]
    import codepeft.evaluation_together as et

    original = et.evaluate_task

    def failing(job, task, *args, **kwargs):
        if job.out.name == "lora0" and task.name == "humaneval":
            raise RuntimeError("broken member")
        return original(job, task, *args, **kwargs)

    monkeypatch.setattr(et, "evaluate_task", failing)
    zero, lora = evaluate_together(targets, TASKS, [1], limit=2, prompt_format="octocoder")
    assert isinstance(lora, RuntimeError) and "broken member" in str(lora)
    assert set(zero) == set(TASKS)  # the other member finished every task, not waiting for the failed one


def test_eval_cli_with_several_targets_evaluates_them_together(runs, tmp_path):
    from typer.testing import CliRunner

    from codepeft.cli import app

    base, made = runs
    out = tmp_path / "out"
    args = ["eval", base, made["lora0"], made["lora1"], "--tasks", "humaneval", "--limit", "1",
            "--max-new-tokens", "8", "--prompt-format", "octocoder", "--output-dir", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in (Path(base).name, "lora0", "lora1"):
        assert (out / name / "humaneval.json").is_file()
        assert f"{out / name}" in result.output.replace("\n", "")
    same_name = CliRunner().invoke(app, ["eval", made["lora0"], made["lora0"], "--output-dir", str(out)])
    assert same_name.exit_code != 0 and "share a name" in same_name.output


def test_a_mixed_batch_row_gets_the_single_adapter_numbers_on_a_bf16_base(tiny_model):
    """codepeft's layout on CPUs with fast bf16: a bf16 base with fp32 LoRA weights. peft's own
    mixed-batch forward rounds the LoRA output to bf16 before adding it; codepeft's adds as the
    single-adapter forward does, so each row's logits are bit for bit the ones it gets alone."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from codepeft.generation.lora_inference import lean_lora

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model("llama"), dtype=torch.bfloat16)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    model = get_peft_model(base, config, adapter_name="a").eval()
    model.add_adapter("b", config)
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.data = p.data.float()  # fp32 adapters on the bf16 base
    ids = torch.randint(3, 200, (3, 12))
    with torch.no_grad():
        alone = {}
        for adapter in ("a", "b"):
            model.set_adapter(adapter)
            alone[adapter] = model(input_ids=ids).logits
        with model.disable_adapter():
            alone["__base__"] = model(input_ids=ids).logits
        names = ["a"] * 3 + ["b"] * 3 + ["__base__"] * 3
        batch = ids.repeat(3, 1)
        with lean_lora(model):
            mixed = model(input_ids=batch, adapter_names=names).logits
        peft_mixed = model(input_ids=batch, adapter_names=names).logits
    for i, adapter in enumerate(("a", "b", "__base__")):
        assert torch.equal(mixed[3 * i : 3 * i + 3], alone[adapter]), adapter
    assert not torch.equal(peft_mixed[:3], alone["a"])  # what the replacement is for
