"""`--config.KEY=VALUE` parsing by the type of the field it replaces."""

import pytest

from cnnjax.errors import UserError
from cnnjax.overrides import apply_overrides, flat_keys, split_argv
from experiments import quickstart


def test_split_argv_both_spellings():
    rest, overrides = split_argv(
        ["prog", "--experiment=q", "--config.optim.lr=0.5", "--config.seed", "3", "--mode=train"]
    )
    assert rest == ["prog", "--experiment=q", "--mode=train"]
    assert overrides == [("optim.lr", "0.5"), ("seed", "3")]


def test_values_parse_by_field_type():
    c = apply_overrides(
        quickstart.get_config(),
        [
            ("optim.lr", "0.5"),
            ("optim.nesterov", "yes"),
            ("batch_size", "16"),
            ("schedule.boundaries", "0.3,0.6"),
            ("num_epochs", "3"),
            ("data.data_dir", "/data"),
            ("augment.flip", "0"),
        ],
    )
    assert c.optim.lr == 0.5 and c.optim.nesterov is True and c.batch_size == 16
    assert c.schedule.boundaries == (0.3, 0.6) and c.num_epochs == 3.0
    assert c.data.data_dir == "/data" and c.augment.flip is False
    assert c.is_locked


def test_original_config_is_untouched():
    original = quickstart.get_config()
    apply_overrides(original, [("optim.lr", "9")])
    assert original.optim.lr != 9


@pytest.mark.parametrize(
    "override, message",
    [
        (("optim.lrr", "1"), "Did you mean 'optim.lr'"),
        (("nope", "1"), "Top-level keys"),
        (("optim", "1"), "Unknown config key 'optim'"),
        (("batch_size", "x"), "expected an integer"),
        (("optim.lr", "x"), "expected a number"),
        (("augment.flip", "x"), "true or false"),
        (("schedule.boundaries", "(0.3"), "a tuple"),
    ],
)
def test_mistakes_are_user_errors(override, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        apply_overrides(quickstart.get_config(), [override])


def test_every_key_required_by_the_foundation_exists():
    required = {
        "seed",
        "model.name",
        "data.name",
        "data.data_dir",
        "batch_size",
        "num_epochs",
        "num_train_steps",
        "optim.name",
        "optim.lr",
        "optim.momentum",
        "optim.nesterov",
        "optim.weight_decay",
        "schedule.name",
        "schedule.warmup_steps",
        "label_smoothing",
        "dtype",
        "log_every_steps",
        "eval_every_steps",
        "checkpoint_every_steps",
        "keep_checkpoints",
    }
    import experiments

    for name, module in experiments.EXPERIMENTS.items():
        missing = required - set(flat_keys(module.get_config()))
        assert not missing, (name, missing)
        assert module.get_config().is_locked, name


def test_model_arguments_can_be_added():
    c = apply_overrides(
        quickstart.get_config(),
        [("model.name", "resnet18"), ("model.stem", "cifar"), ("model.zero_init_residual", "True")],
    )
    assert c.model.stem == "cifar" and c.model.zero_init_residual is True
    with pytest.raises(UserError, match="Unknown config key 'optim.stem'"):
        apply_overrides(quickstart.get_config(), [("optim.stem", "cifar")])


def test_finetune_optim_takes_optim_keys_parsed_by_their_type():
    c = apply_overrides(
        quickstart.get_config(),
        [("transfer.finetune_optim.nesterov", "true"), ("transfer.finetune_optim.momentum", "0")],
    )
    assert c.transfer.finetune_optim.to_dict() == {"nesterov": True, "momentum": 0.0}
    assert isinstance(c.transfer.finetune_optim.momentum, float)
    for key in ("transfer.finetune_optim.nesterv", "transfer.finetune_optim.lr"):
        with pytest.raises(UserError, match="transfer.finetune_optim takes keys of optim"):
            apply_overrides(quickstart.get_config(), [(key, "1")])
    with pytest.raises(UserError, match="expected true or false"):
        apply_overrides(quickstart.get_config(), [("transfer.finetune_optim.nesterov", "maybe")])
