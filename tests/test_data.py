"""Data: sources and field mapping, study loaders on real-schema fixtures, formats, masking,
truncation, packing without cross-example attention, joint mixing, stdlib-instruct."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import pytest
import torch
from helpers import FIXTURES, write_jsonl

from codepeft.config import DatasetSpec, DataSpec
from codepeft.data import build_datasets, load_examples
from codepeft.data.formats import render
from codepeft.data.tokenize import IGNORE, Collator, encode, pack
from codepeft.errors import CodepeftError


def test_study_loaders_read_their_real_schemas():
    conala = load_examples(DatasetSpec(source="conala", data_files=str(FIXTURES / "conala.jsonl")))
    assert conala[0] == {
        "instruction": "convert a list of integers `x` into a single integer",
        "input": "",
        "output": "int(''.join(map(str, x)))",
        "language": "python",  # its answers are code (chat training puts them in a code block)
    }
    assert conala[1]["instruction"] == "How to convert a string to lowercase"  # falls back to intent

    alpaca = load_examples(DatasetSpec(source="codealpaca-py", data_files=str(FIXTURES / "codealpaca.jsonl")))
    assert [a["instruction"] for a in alpaca] == [
        "Write a function that returns the square of a number.",
        "Reverse a list in Python.",
    ]  # SQL and JavaScript rows are not the Python subset

    guanaco = load_examples(DatasetSpec(source="guanaco-commits", data_files=str(FIXTURES / "guanaco_commits.jsonl")))
    assert guanaco[0]["output"].startswith("for i in range(n)")

    apps = load_examples(DatasetSpec(source="apps", data_files=str(FIXTURES / "apps.jsonl")))
    assert len(apps) == 1 and apps[0]["output"] == "n = int(input())\nprint(n * n)"

    mbpp = load_examples(DatasetSpec(source="mbpp", data_files=str(FIXTURES / "mbpp.jsonl")))
    assert "Your code should pass these tests:\nassert set(similar_elements" in mbpp[0]["instruction"]


def test_field_mapping_and_auto_schemas(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"intent": "add", "snippet": "a + b"}])
    ex = load_examples(DatasetSpec(source=str(path), fields={"instruction": "intent", "output": "snippet"}))
    assert ex == [{"instruction": "add", "output": "a + b", "input": ""}]
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "completion": "c"}])
    assert load_examples(DatasetSpec(source=str(path)))[0]["output"] == "c"
    chat = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}]
    path = write_jsonl(tmp_path / "m.jsonl", chat)
    assert load_examples(DatasetSpec(source=str(path)))[0]["messages"][1]["content"] == "yo"


def test_json_and_parquet_sources(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"instruction": "i", "input": "", "output": "o"}]
    (tmp_path / "d.json").write_text(json.dumps(rows))
    assert load_examples(DatasetSpec(source=str(tmp_path / "d.json")))[0]["output"] == "o"
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    assert load_examples(DatasetSpec(source=str(tmp_path / "d.parquet")))[0]["output"] == "o"


def test_missing_field_names_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"intent": "a", "snippet": "b"}, {"intent": "c"}])
    with pytest.raises(CodepeftError) as err:
        load_examples(DatasetSpec(source=str(path), fields={"instruction": "intent", "output": "snippet"}))
    assert f"{path} line 2" in str(err.value) and "'snippet'" in str(err.value)
    with pytest.raises(CodepeftError, match=r"line 1: cannot tell the instruction"):
        load_examples(DatasetSpec(source=str(write_jsonl(tmp_path / "x.jsonl", [{"foo": 1}]))))
    (tmp_path / "bad.jsonl").write_text('{"instruction": "a", "output": "b"}\n{oops\n')
    with pytest.raises(CodepeftError, match=r"bad.jsonl line 2: not valid JSON"):
        load_examples(DatasetSpec(source=str(tmp_path / "bad.jsonl")))
    with pytest.raises(CodepeftError, match=r"missing field 'snippet' of the conala schema"):
        load_examples(
            DatasetSpec(source="conala", data_files=str(write_jsonl(tmp_path / "c.jsonl", [{"intent": "x"}])))
        )


def test_unreachable_hub_dataset_is_a_clear_error():
    with pytest.raises(CodepeftError, match="cannot load dataset 'nobody/no-such-dataset'"):
        load_examples(DatasetSpec(source="nobody/no-such-dataset"))


def test_prompt_formats(tiny_model):
    from transformers import AutoTokenizer

    ex = {"instruction": "Sort x.", "input": "", "output": "sorted(x)"}
    assert render("octocoder", ex) == ("Question: Sort x.\n\nAnswer:\n", "sorted(x)")
    assert render("alpaca", ex) == ("### Instruction:\nSort x.\n### Response:\n", "sorted(x)")
    qwen = AutoTokenizer.from_pretrained(tiny_model("qwen2"))
    prompt, response = render("chat", ex, qwen)
    assert prompt == "<|im_start|>user\nSort x.<|im_end|>\n<|im_start|>assistant\n" and response == "sorted(x)"
    llama = AutoTokenizer.from_pretrained(tiny_model("llama"))
    with pytest.raises(CodepeftError, match="chat template"):
        render("chat", ex, llama)


def test_response_only_masking_and_truncation(tiny_tokenizer):
    tok = tiny_tokenizer
    item = encode(tok, "def f():\n", "    return 1\n", 64, "response", False)
    n_prompt = len(tok("def f():\n")["input_ids"])
    assert item["labels"][:n_prompt] == [IGNORE] * n_prompt
    assert item["labels"][n_prompt:] == item["input_ids"][n_prompt:]
    assert item["input_ids"][-1] == tok.eos_token_id
    everything = encode(tok, "def f():\n", "    return 1\n", 64, "all", False)
    assert everything["labels"] == everything["input_ids"]
    short = encode(tok, "def f():\n", "    return 1\n" * 20, 16, "response", False)
    assert len(short["input_ids"]) == 16
    assert encode(tok, "x = 1\n" * 40, "y", 16, "response", False) is None  # prompt fills the window


def test_collator_pads_and_counts_real_tokens(tiny_tokenizer):
    a = encode(tiny_tokenizer, "a = 1\n", "b = 2\n", 64, "response", False)
    b = encode(tiny_tokenizer, "x\n", "yy = 33 + 4\n", 64, "response", False)
    batch = Collator(tiny_tokenizer.pad_token_id)([a, b])
    assert batch["num_tokens"].item() == len(a["input_ids"]) + len(b["input_ids"])
    assert batch["attention_mask"].sum().item() == batch["num_tokens"].item()
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()


@pytest.mark.numerics
@pytest.mark.parametrize("arch", ["gpt_bigcode", "llama", "qwen2", "codegen", "starcoder2", "gpt2", "gpt_neox"])
def test_packing_never_attends_across_examples(tiny_model, tiny_tokenizer, arch):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model(arch)).eval()
    model.config.use_cache = False
    exs = [
        encode(tiny_tokenizer, p, r, 64, "response", False)
        for p, r in [
            ("def a():\n", "    return 1\n"),
            ("class B:\n", "    x = [1, 2, 3]\n"),
            ("import os\n", "print(os.sep)\n"),
        ]
    ]
    rows = pack(exs, 64)
    assert len(rows) == 1
    batch = Collator(tiny_tokenizer.pad_token_id)(rows)
    assert "attention_mask" not in batch
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        start = 0
        for ex in exs:
            alone = model(input_ids=torch.tensor([ex["input_ids"]])).logits[0]
            torch.testing.assert_close(packed[start : start + len(alone)], alone, atol=1e-4, rtol=1e-4)
            start += len(alone)
    # the first label of every packed example is masked
    starts = [0, len(exs[0]["input_ids"]), len(exs[0]["input_ids"]) + len(exs[1]["input_ids"])]
    assert all(rows[0]["labels"][s] == IGNORE for s in starts)


def test_joint_training_mixes_by_weight(tiny_tokenizer, tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "A", "output": f"a{i}"} for i in range(200)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"instruction": "B", "output": f"b{i}"} for i in range(200)])
    spec = DataSpec(
        train=[DatasetSpec(source=str(a), weight=3.0), DatasetSpec(source=str(b), weight=1.0)], format="plain"
    )
    train, evals = build_datasets(spec, tiny_tokenizer, encoder_decoder=False, seed=0)
    first = [tiny_tokenizer.decode(r["input_ids"][:1]) for r in train.select(range(200))]
    counts = Counter(first)
    assert 0.65 < counts["A"] / 200 < 0.85  # 3:1 mixing
    assert set(evals) == {"a", "b"}  # eval loss per source


def test_eval_limit_zero_means_no_held_out_evaluation_and_the_same_training_data(tiny_tokenizer, tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "A", "output": f"a{i}"} for i in range(100)])
    limited = DataSpec(train=[DatasetSpec(source=str(a))], format="plain", eval_limit=3)
    train, evals = build_datasets(limited, tiny_tokenizer, encoder_decoder=False, seed=0)
    none_train, none_evals = build_datasets(
        limited.model_copy(update={"eval_limit": 0}), tiny_tokenizer, encoder_decoder=False, seed=0
    )
    assert len(evals) == 3 and none_evals is None
    assert none_train["input_ids"] == train["input_ids"]  # the held-out split stays out of training


def test_stdlib_instruct_splits_are_disjoint_by_module():
    from codepeft.corpus import split_of

    splits = {s: load_examples(DatasetSpec(source="stdlib-instruct"), s) for s in ("train", "valid", "test")}
    assert all(len(v) > 100 for v in splits.values())
    for name, rows in splits.items():
        assert {split_of(r["module"]) for r in rows} == {name}
    mods = {n: {r["module"].split(".")[0] for r in rows} for n, rows in splits.items()}
    assert not (mods["train"] & mods["test"]) and not (mods["train"] & mods["valid"])
    bodies = [" ".join(r["output"].split()) for rows in splits.values() for r in rows]
    assert len(bodies) == len(set(bodies))  # de-duplicated
    first = splits["train"][0]
    compile(first["instruction"] + first["output"], "<stdlib-instruct>", "exec")  # pairs re-form valid code


@pytest.mark.numerics
@pytest.mark.parametrize("arch", ["gpt_bigcode", "llama", "qwen2", "codegen"])
def test_padding_free_batch_gives_the_padded_batch_loss(tiny_model, tiny_tokenizer, arch):
    """The default batches lay examples end to end: same loss and gradients as padding them."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model(arch))
    model.config.use_cache = False
    model.eval()  # no dropout: the two layouts draw different masks
    pairs = [
        ("def a():\n", "    return 1\n"),
        ("class Bee:\n    '''x'''\n", "    x = [1, 2, 3, 4]\n"),
        ("#\n", "pass\n"),
    ]
    exs = [encode(tiny_tokenizer, p, r, 64, "response", False) for p, r in pairs]
    padded = Collator(tiny_tokenizer.pad_token_id)(exs)
    flat = Collator(tiny_tokenizer.pad_token_id, flatten=True)(exs)
    assert flat["input_ids"].shape == (1, sum(len(e["input_ids"]) for e in exs))
    assert flat["num_tokens"] == padded["num_tokens"] and "attention_mask" not in flat
    assert (flat["labels"][:, 1:] != IGNORE).sum() == (padded["labels"][:, 1:] != IGNORE).sum()  # same targets
    losses, grads = [], []
    for batch in (padded, flat):
        model.zero_grad()
        batch = {k: v for k, v in batch.items() if k != "num_tokens"}
        loss = model(**batch).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


@pytest.mark.numerics
@pytest.mark.parametrize("arch", ["gpt_bigcode", "llama", "qwen2", "codegen"])
def test_logits_only_at_targets_give_the_same_loss_and_gradients(tiny_model, tiny_tokenizer, arch):
    """Training computes logits only where a label is predicted (through peft too): the loss and
    every gradient equal those from logits at every position, and the trainer counts targets."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from codepeft.training.trainer import count_targets, logits_at_targets, supports_logits_at_targets

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model(arch))
    base.config.use_cache = False
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).eval()
    assert supports_logits_at_targets(model)
    pairs = [("def a():\n", "    return 1\n"), ("class Bee:\n    'x'\n", "    x = [1, 2, 3, 4]\n"), ("#\n", "pass\n")]
    exs = [encode(tiny_tokenizer, p, r, 64, "response", False) for p, r in pairs]
    batch = Collator(tiny_tokenizer.pad_token_id, flatten=True)(exs)
    batch.pop("num_tokens")
    targets = sum(sum(1 for x in e["labels"][1:] if x != IGNORE) for e in exs)
    results = []
    for inputs in (batch, logits_at_targets(batch)):
        model.zero_grad()
        out = model(**inputs)
        out.loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
        results.append((out.loss.detach(), out.logits.shape[1], grads))
        assert count_targets(inputs, model) == targets
    (full_loss, full_rows, full_grads), (loss, rows, grads) = results
    assert full_rows == batch["input_ids"].shape[1] and rows == targets < full_rows
    torch.testing.assert_close(loss, full_loss, atol=1e-6, rtol=1e-6)
    for a, b in zip(grads, full_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("arch", ["gpt_bigcode", "llama", "qwen2"])
def test_per_example_attention_matches_each_example_alone(tiny_model, tiny_tokenizer, arch, monkeypatch):
    """Training's attention runs SDPA on each example's slice of a padding-free row (once per
    example and layer), and gives each example's logits as if it were alone."""
    from transformers import AutoModelForCausalLM

    import codepeft.training.varlen as varlen

    model = AutoModelForCausalLM.from_pretrained(tiny_model(arch)).eval()
    model.config.use_cache = False
    assert varlen.supports_varlen(model)
    pairs = [("def a():\n", "    return 1\n"), ("class B:\n", "    x = [1, 2, 3]\n"), ("import os\n", "print(1)\n")]
    exs = [encode(tiny_tokenizer, p, r, 64, "response", False) for p, r in pairs]
    batch = Collator(tiny_tokenizer.pad_token_id, flatten=True, boundaries=True)(exs)
    assert batch["cu_seq_lens_q"].tolist() == [0, *itertools.accumulate(len(e["input_ids"]) for e in exs)]
    calls = []
    real = varlen.sdpa_attention_forward
    monkeypatch.setattr(varlen, "sdpa_attention_forward", lambda *a, **k: calls.append(a[1].shape[2]) or real(*a, **k))
    inputs = {k: v for k, v in batch.items() if k not in ("num_tokens", "labels")}
    with torch.no_grad(), varlen.varlen_attention_enabled(model):
        packed = model(**inputs).logits[0]
    assert model.config._attn_implementation == "sdpa"  # restored afterwards
    assert calls == [len(e["input_ids"]) for e in exs] * model.config.num_hidden_layers
    start = 0
    with torch.no_grad():
        for ex in exs:
            alone = model(input_ids=torch.tensor([ex["input_ids"]])).logits[0]
            torch.testing.assert_close(packed[start : start + len(alone)], alone, atol=1e-5, rtol=1e-5)
            start += len(alone)


def test_conala_and_oasst_commitpackft_ship_with_their_published_splits():
    from codepeft.tasks import get_task

    sizes = {split: len(load_examples(DatasetSpec(source="conala"), split)) for split in ("train", "valid", "test")}
    assert sizes == {"train": 2135, "valid": 201, "test": 543}
    first = load_examples(DatasetSpec(source="conala"), "test")[0]
    assert first["output"] == "{k: (float(d2[k]) / d1[k]) for k in d2}" and first["instruction"].startswith("divide")
    task = get_task("conala")
    assert len(task.problems()) == 543 and task.problems()[0]["output"] == first["output"]
    oasst = load_examples(DatasetSpec(source="oasst-commitpackft"))
    held_out = load_examples(DatasetSpec(source="oasst-commitpackft"), "test")
    # one in twenty held out by a hash of the text, as guanaco-commits has a test split
    assert len(oasst) + len(held_out) == 151 + 1178 and len(held_out) == 57
    assert all(e["instruction"] and e["output"] for e in oasst + held_out)
    assert not {e["instruction"] for e in oasst} & {e["instruction"] for e in held_out}
    with pytest.raises(CodepeftError, match="holds no usable examples"):
        load_examples(DatasetSpec(source="oasst-commitpackft"), "valid")


@pytest.mark.parametrize("arch", ["gpt_bigcode", "llama"])
@pytest.mark.parametrize("layout", ["padded", "padding-free", "prompt-tuning", "full"])
def test_chunked_loss_equals_the_models_own_loss_and_gradients(tiny_model, tiny_tokenizer, arch, layout):
    """The loss computed a few targets at a time (the output layer on target positions only,
    each chunk's gradients computed with its logits) equals the model's own loss and gradients,
    through peft (LoRA, and prompt tuning's virtual tokens), padded or padding-free, with the
    output layer trained too (full fine-tuning; tied to the embeddings in these models), and
    under the Trainer's sum / num_items_in_batch convention."""
    from peft import LoraConfig, PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from codepeft.training.trainer import chunked_causal_loss, logits_are_head_of_hidden

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model(arch))
    base.config.use_cache = False
    if layout == "prompt-tuning":
        model = get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)).eval()
    elif layout == "full":
        model = base.eval()
        assert base.get_output_embeddings().weight.requires_grad
    else:
        model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).eval()
    pairs = [("def a():\n", "    return 1\n"), ("class Bee:\n    'x'\n", "    x = [1, 2, 3, 4]\n"), ("#\n", "pass\n")]
    exs = [encode(tiny_tokenizer, p, r, 64, "response", False) for p, r in pairs]
    batch = Collator(tiny_tokenizer.pad_token_id, flatten=layout in ("padding-free", "full"))(exs)
    batch.pop("num_tokens")
    targets = sum(sum(1 for x in e["labels"][1:] if x != IGNORE) for e in exs)
    assert logits_are_head_of_hidden(model, batch)

    def loss_and_grads(compute):
        model.zero_grad()
        loss = compute()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    reference, reference_grads = loss_and_grads(lambda: model(**batch).loss)
    for chunk in (3, 1024):
        loss, grads = loss_and_grads(lambda chunk=chunk: chunked_causal_loss(model, batch, chunk))
        torch.testing.assert_close(loss, reference, atol=1e-6, rtol=1e-6)
        for a, b in zip(grads, reference_grads, strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    summed = chunked_causal_loss(model, batch, 5, num_items_in_batch=torch.tensor(2 * targets))
    torch.testing.assert_close(summed, reference / 2, atol=1e-6, rtol=1e-6)


def test_chunked_loss_is_refused_where_logits_are_not_the_head_of_the_hidden_state(tiny_model):
    """A model that scales its logits (as Gemma 2, Cohere and Granite do) keeps the ordinary loss."""
    from transformers import AutoModelForCausalLM

    from codepeft.training.trainer import logits_are_head_of_hidden

    model = AutoModelForCausalLM.from_pretrained(tiny_model("llama"))
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    assert logits_are_head_of_hidden(model, batch)
    original = model.forward
    model.forward = lambda *a, **k: _scaled(original(*a, **k))  # the same head, logits scaled afterwards
    assert not logits_are_head_of_hidden(model, batch)


def _scaled(out):
    out.logits = out.logits * 0.5
    return out
