"""Quiet saving: no library progress bars or save warnings unless asked for, state restored."""

import logging

import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from winnow.common.causal_lm import quiet_loading, save_pretrained_quietly  # noqa: E402


@pytest.fixture
def tiny_model():
    config = transformers.GPT2Config(
        vocab_size=16, n_positions=8, n_embd=8, n_layer=1, n_head=1, tie_word_embeddings=True
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config)


def test_save_writes_no_shard_bar_and_reloads(tiny_model, tmp_path, capfd):
    save_pretrained_quietly(tiny_model, tmp_path / "model")
    captured = capfd.readouterr()
    assert "Writing model shards" not in captured.err + captured.out
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "model")
    assert torch.equal(reloaded.lm_head.weight, tiny_model.lm_head.weight)


def test_verbose_save_shows_the_bar_and_state_is_restored(tiny_model, tmp_path, capfd):
    transformers.logging.set_verbosity_warning()
    save_pretrained_quietly(tiny_model, tmp_path / "model", verbose=True)
    assert "Writing model shards" in capfd.readouterr().err
    assert transformers.logging.get_verbosity() == transformers.logging.WARNING
    assert transformers.utils.logging.is_progress_bar_enabled()


def test_accelerate_shared_tensor_warning_is_silenced_inside_only(caplog):
    accelerate = pytest.importorskip("accelerate")
    from accelerate import utils as accelerate_utils

    accelerate.PartialState(cpu=True)  # accelerate logs only once its state exists
    shared = torch.zeros(2)
    state = {"embed.weight": shared, "head.weight": shared}
    with caplog.at_level(logging.WARNING), quiet_loading(transformers):
        accelerate_utils.clean_state_dict_for_safetensors(dict(state))
    assert "Removed shared tensor" not in caplog.text
    with caplog.at_level(logging.WARNING):
        accelerate_utils.clean_state_dict_for_safetensors(dict(state))
    assert "Removed shared tensor" in caplog.text


def test_winnow_verbose_lets_the_bar_through(tiny_model, tmp_path, capfd, monkeypatch):
    from typer.testing import CliRunner

    from winnow.cli import app
    from winnow.common.verbosity import VERBOSE_ENV

    monkeypatch.setenv(VERBOSE_ENV, "0")  # restored (unset) after the test
    result = CliRunner().invoke(app, ["--verbose", "runs", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    import os

    assert os.environ[VERBOSE_ENV] == "1"  # the root flag, seen by every library call below
    save_pretrained_quietly(tiny_model, tmp_path / "model")
    assert "Writing model shards" in capfd.readouterr().err
