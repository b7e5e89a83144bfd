import pytest
from pydantic import Field

from winnow.common.config import Config, apply_overrides, config_to_yaml, load_config
from winnow.common.exceptions import ConfigError


class TrainerConfig(Config):
    lr: float = Field(1e-3, gt=0, description="learning rate, a positive float")
    steps: int = Field(10, ge=1)
    kl: str = Field("forward", pattern="^(forward|reverse)$")


class JobConfig(Config):
    name: str = "job"
    trainer: TrainerConfig = TrainerConfig()


def test_defaults_and_yaml_round_trip(tmp_path):
    config = load_config(JobConfig)
    path = tmp_path / "job.yaml"
    path.write_text(config_to_yaml(config))
    assert load_config(JobConfig, path) == config


def test_yaml_values_are_loaded(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("name: run1\ntrainer:\n  lr: 0.5\n  steps: 3\n")
    config = load_config(JobConfig, path)
    assert (config.name, config.trainer.lr, config.trainer.steps) == ("run1", 0.5, 3)


def test_override_sets_nested_field_with_yaml_typing():
    config = load_config(JobConfig, overrides=["trainer.lr=1e-4", "trainer.steps=7"])
    assert config.trainer.lr == pytest.approx(1e-4)
    assert config.trainer.steps == 7


def test_override_beats_file(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("trainer:\n  steps: 3\n")
    assert load_config(JobConfig, path, ["trainer.steps=5"]).trainer.steps == 5


def test_invalid_value_names_path_value_and_allowed():
    with pytest.raises(ConfigError) as info:
        load_config(JobConfig, {"trainer": {"lr": -2}})
    message = str(info.value)
    assert "trainer.lr" in message
    assert "-2" in message
    assert "greater than 0" in message
    assert "learning rate, a positive float" in message


def test_invalid_override_points_at_the_flag():
    with pytest.raises(ConfigError, match=r"--set trainer\.steps="):
        load_config(JobConfig, overrides=["trainer.steps=zero"])


def test_unknown_key_is_an_error_with_suggestion():
    with pytest.raises(ConfigError) as info:
        load_config(JobConfig, {"trainer": {"lrr": 0.1}})
    message = str(info.value)
    assert "trainer.lrr" in message
    assert "unknown key" in message
    assert "did you mean 'lr'" in message
    assert "kl, lr, steps" in message


def test_all_errors_reported_in_one_exception():
    with pytest.raises(ConfigError) as info:
        load_config(JobConfig, {"trainer": {"lr": 0, "steps": 0}})
    assert "trainer.lr" in str(info.value) and "trainer.steps" in str(info.value)


def test_error_is_a_value_error():
    with pytest.raises(ValueError):
        load_config(JobConfig, {"name": ["not", "a", "string"]})


@pytest.mark.parametrize("override", ["trainer.lr", "=3", "trainer..lr=1"])
def test_malformed_override(override):
    with pytest.raises(ConfigError, match=r"dotted\.path=value"):
        apply_overrides({}, [override])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(JobConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(JobConfig, bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(JobConfig, scalar)


def test_apply_overrides_does_not_mutate_input():
    original = {"trainer": {"lr": 1.0}}
    result = apply_overrides(original, ["trainer.lr=2"])
    assert original == {"trainer": {"lr": 1.0}}
    assert result == {"trainer": {"lr": 2}}


def test_redact_hides_strings_under_secret_names_at_any_depth():
    from winnow.common.config import is_secret_name, redact

    secret_names = ["api_keys", "upstream_api_key", "hf_token", "apiKey", "Authorization"]
    plain_names = ["max_tokens_cap", "input_price_per_token", "prompt_token_bound", "monkey"]
    assert all(is_secret_name(name) for name in secret_names)
    assert not any(is_secret_name(name) for name in plain_names)
    value = {"models": [{"name": "a", "upstream_api_key": "sk-1"}], "api_keys": ["k1", "k2"]}
    value["max_tokens"] = 5
    assert redact(value) == {
        "models": [{"name": "a", "upstream_api_key": "***"}],
        "api_keys": ["***", "***"],
        "max_tokens": 5,
    }
    assert redact("sk-1", secret=True) == "***" and redact(3, secret=True) == 3


class PairConfig(Config):
    big: TrainerConfig = TrainerConfig(lr=0.5, steps=9)
    small: TrainerConfig | None = TrainerConfig(lr=0.1)
    made: TrainerConfig = Field(default_factory=TrainerConfig)


def test_a_partly_set_sub_config_keeps_the_rest_of_its_own_default(tmp_path):
    config = load_config(PairConfig, None, ["big.steps=2", "small.steps=4"])
    assert (config.big.lr, config.big.steps) == (0.5, 2)  # not the class default lr
    assert (config.small.lr, config.small.steps) == (0.1, 4)
    path = tmp_path / "c.yaml"
    path.write_text("big: {steps: 3}\nsmall: null\nmade: {steps: 5}\n")
    config = load_config(PairConfig, path)
    assert (config.big.lr, config.big.steps) == (0.5, 3) and config.small is None
    assert config.made == TrainerConfig(steps=5)
