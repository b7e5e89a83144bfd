"""Layer pruning on a tiny random Llama that speaks SmolLM2's real tokenizer (49,152 tokens)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer
from typer.testing import CliRunner

from winnow.cli import app
from winnow.common.exceptions import MissingExtraError
from winnow.distill.exceptions import DistillInputError
from winnow.distill.models import TinyModelConfig, build_tiny_model, load_model
from winnow.distill.pruning import evenly_spaced_layers, prune_layers

SMOLLM2_TOKENIZER = Path(__file__).parents[1] / "fixtures" / "smollm2_tokenizer"


@pytest.fixture(scope="module")
def smol_tokenizer():
    tokenizer = AutoTokenizer.from_pretrained(SMOLLM2_TOKENIZER)
    tokenizer.padding_side = "left"
    return tokenizer


@pytest.fixture(scope="module")
def tiny_llama(smol_tokenizer):
    config = TinyModelConfig(
        family="llama", hidden_size=16, num_layers=5, num_heads=2, max_positions=64
    )
    return build_tiny_model(config, smol_tokenizer, seed=0).eval()


def test_the_fixture_is_smollm2s_tokenizer(smol_tokenizer, tiny_llama):
    assert len(smol_tokenizer) == 49_152 == tiny_llama.get_output_embeddings().weight.shape[0]
    assert smol_tokenizer.eos_token == "<|im_end|>" and smol_tokenizer.chat_template


def test_pruning_keeps_the_kept_layers_and_everything_else(tiny_llama):
    pruned = prune_layers(tiny_llama, [0, 2, 4])
    original = tiny_llama.state_dict()
    kept = pruned.state_dict()
    assert pruned.config.num_hidden_layers == 3 == len(pruned.get_decoder().layers)
    for name, value in kept.items():
        if ".layers." in name:
            new_index = int(name.split(".layers.")[1].split(".")[0])
            source = name.replace(f".layers.{new_index}.", f".layers.{[0, 2, 4][new_index]}.")
        else:
            source = name
        assert torch.equal(value, original[source]), name
    assert len(kept) < len(original)
    # The source model is untouched.
    assert tiny_llama.config.num_hidden_layers == 5 and len(tiny_llama.get_decoder().layers) == 5


def test_a_pruned_model_saves_loads_and_generates_with_its_cache(
    tiny_llama, smol_tokenizer, tmp_path
):
    pruned = prune_layers(tiny_llama, [1, 3])
    pruned.save_pretrained(tmp_path)
    smol_tokenizer.save_pretrained(tmp_path)
    loaded, tokenizer = load_model(tmp_path)
    assert len(tokenizer) == 49_152
    prompt = tokenizer(["What is 12 + 7?"], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**prompt).logits, pruned(**prompt).logits)
        settings = {"max_new_tokens": 4, "do_sample": False, "pad_token_id": 2}
        cached = loaded.generate(**prompt, use_cache=True, **settings)
        uncached = loaded.generate(**prompt, use_cache=False, **settings)
    assert torch.equal(cached, uncached)  # the kept layers index the KV cache 0..k-1


def test_evenly_spaced_layers_keep_the_first_and_the_last():
    assert evenly_spaced_layers(30, 10) == [0, 3, 6, 10, 13, 16, 19, 23, 26, 29]
    assert evenly_spaced_layers(5, 5) == [0, 1, 2, 3, 4]
    assert evenly_spaced_layers(5, 1) == [4]
    with pytest.raises(DistillInputError, match="cannot keep 6 of 5"):
        evenly_spaced_layers(5, 6)


@pytest.mark.parametrize(
    ("keep", "message"),
    [([], "increasing"), ([2, 1], "increasing"), ([0, 0], "increasing"), ([0, 5], "outside 0..4")],
)
def test_pruning_refuses_bad_layer_lists(tiny_llama, keep, message):
    with pytest.raises(DistillInputError, match=message):
        prune_layers(tiny_llama, keep)


def test_the_prune_command_writes_a_loadable_student(tiny_llama, smol_tokenizer, tmp_path):
    tiny_llama.save_pretrained(tmp_path / "teacher")
    smol_tokenizer.save_pretrained(tmp_path / "teacher")
    runner = CliRunner()
    args = ["distill", "prune", "--model", str(tmp_path / "teacher"), "-o", str(tmp_path / "s")]
    result = runner.invoke(app, [*args, "--layers", "3"])
    assert result.exit_code == 0, result.output
    assert "kept decoder layers [0, 2, 4] of 5" in result.output
    student, _ = load_model(tmp_path / "s")
    assert student.config.num_hidden_layers == 3
    for bad, message in ((["--keep", "0,x"], "comma-separated"), ([], "exactly one of")):
        result = runner.invoke(app, [*args, *bad])
        assert result.exit_code == 2 and message in result.output


def test_the_bundled_smollm2_loads_prunes_and_saves(tmp_path):
    """The real model (about 20 s to load): a GGUF load once left a quantizer attached that made
    save_pretrained refuse the fine-tuned model after a 23-minute SFT."""
    pytest.importorskip("gguf")
    try:
        model, tokenizer = load_model("bundled:smollm2")
    except MissingExtraError as exc:
        pytest.skip(str(exc))
    assert len(tokenizer) == 49_152 and model.config.num_hidden_layers == 30
    assert getattr(model, "hf_quantizer", None) is None  # plain float: trains and saves
    assert all(p.dtype == torch.float32 and p.requires_grad for p in model.parameters())
    student = prune_layers(model, evenly_spaced_layers(30, 10))
    assert student.config.num_hidden_layers == 10
    student.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reloaded, _ = load_model(tmp_path)
    assert reloaded.config.num_hidden_layers == 10


def test_opd_runs_end_to_end_on_a_pruned_llama_with_a_chat_task(
    tiny_llama, smol_tokenizer, tmp_path
):
    """The real-LM path in miniature: prune, check, train two steps on chat-format prompts."""
    from winnow.common.config import load_config
    from winnow.common.runs import RunDir
    from winnow.distill.config import TrainConfig
    from winnow.distill.jobs import train_section

    for role, model in (("teacher", tiny_llama), ("student", prune_layers(tiny_llama, [0, 4]))):
        model.save_pretrained(tmp_path / role)
        smol_tokenizer.save_pretrained(tmp_path / role)
    config = load_config(
        TrainConfig,
        {
            "student": {"path": str(tmp_path / "student")},
            "teacher": {"path": str(tmp_path / "teacher")},
            "task": {"digits": [2], "reverse_answer": False, "chat": True, "test_problems": 8},
            "rollout": {"max_new_tokens": 4},
            "eval": {"every": 2, "max_new_tokens": 4},
            "steps": 2,
            "prompts_per_step": 4,
            "arms": {"tip": {"name": "entropy_sample", "p": 0.5, "weighting": "iw_opd"}},
            "cpu": True,
        },
    )
    run = RunDir("tiny-real", root=tmp_path / "runs", seed=0)
    section = train_section(config, run, quiet=True)
    assert set(section.summary) == {"tip"} and "final accuracy" in section.summary["tip"]
    assert "signal: forward KL: KL(teacher || student)" in section.markdown
    assert "chat template: shared" in section.markdown
    rows = (run.path / "metrics.jsonl").read_text().splitlines()
    assert any('"loss_mass_decile_0"' in row for row in rows)


def test_a_pruned_student_names_its_teacher_and_refuses_a_replaced_one(
    tiny_llama, smol_tokenizer, tmp_path
):
    from winnow.common.exceptions import ProvenanceError
    from winnow.common.provenance import manifest_sha256, read_manifest
    from winnow.distill.jobs import run_prune
    from winnow.distill.models import check_lineage

    teacher, student = tmp_path / "teacher", tmp_path / "student"
    tiny_llama.save_pretrained(teacher)
    smol_tokenizer.save_pretrained(teacher)
    run_prune(str(teacher), None, None, 3, student)
    run_prune(str(student), None, [0, 2], None, tmp_path / "smaller")
    (parent,) = read_manifest(tmp_path / "smaller")["parents"]
    assert parent["relative_path"] == "../student"
    assert parent["manifest_sha256"] == manifest_sha256(student)
    assert read_manifest(student)["parents"][0]["manifest_sha256"] is None  # a bare folder
    check_lineage(tmp_path / "smaller", student)
    with pytest.raises(FileExistsError, match=r"student already exists; pass --overwrite"):
        run_prune(str(teacher), None, [0, 4], None, student)
    run_prune(str(teacher), None, [0, 4], None, student, overwrite=True)
    assert load_model(student)[0].config.num_hidden_layers == 2
    with pytest.raises(ProvenanceError, match=r"smaller was made from .*student.* now holds"):
        check_lineage(tmp_path / "smaller", student)
    check = ["distill", "check", "--student", str(tmp_path / "smaller"), "--teacher", str(student)]
    result = CliRunner().invoke(app, check)
    assert result.exit_code == 2 and "now holds another model" in " ".join(result.output.split())
    check_lineage(tmp_path / "smaller", teacher)  # another teacher: the user's choice
    check_lineage("bundled:smollm2", student)
