"""LightModel: settings declared like pydantic models, validated by a pydantic twin built on
first use. Defaults must be the twin's, and validation (values, errors) pydantic's own."""

from __future__ import annotations

from typing import Literal

import pydantic
import pytest

from curate.config import ConfigError, CurateConfig, TemplateBudgetConfig, kebab, parse_config
from curate.engine.rule import load_builtin_rules
from curate.lightmodel import ConfigDict, Field, LightModel, field_validator

Mode = Literal["fast", "exact"]


def no_bot(cls, roles: list[str]) -> list[str]:
    """The roles validator of every sample model below."""
    if "bot" in roles:
        raise ValueError("bot is not a role")
    return roles


class Sample(LightModel):
    """Options declared the LightModel way."""

    model_config = ConfigDict(extra="forbid", alias_generator=kebab, populate_by_name=True, frozen=True)

    threshold: float = Field(0.8, gt=0.0, le=1.0, description="similarity")
    max_rows: int = Field(50, ge=2)
    mode: Mode = "fast"
    roles: list[str] = Field(default_factory=lambda: ["user", "assistant"])

    _known = field_validator("roles")(classmethod(no_bot))


class SamplePydantic(pydantic.BaseModel):
    """The same options as a plain pydantic model: what Sample must validate like."""

    model_config = pydantic.ConfigDict(extra="forbid", alias_generator=kebab, populate_by_name=True, frozen=True)

    threshold: float = pydantic.Field(0.8, gt=0.0, le=1.0, description="similarity")
    max_rows: int = pydantic.Field(50, ge=2)
    mode: Mode = "fast"
    roles: list[str] = pydantic.Field(default_factory=lambda: ["user", "assistant"])

    _known = pydantic.field_validator("roles")(classmethod(no_bot))


class Extended(Sample):
    """A subclass adds a field and keeps its base's."""

    drop: bool = Field(False)


def plain_errors(exc: pydantic.ValidationError) -> list[tuple]:
    return [(error["type"], error["loc"], error["msg"], error["input"]) for error in exc.errors()]


def dump(model) -> dict:
    return {name: getattr(model, name) for name in type(model).model_fields}


def test_every_rule_and_config_default_is_the_pydantic_twins():
    models = [CurateConfig, TemplateBudgetConfig, *(rule.Options for rule in load_builtin_rules().values())]
    for model in models:
        light, twin = model(), model.pydantic_model()()
        assert dump(light) == dump(twin), model.__qualname__
        assert type(model.pydantic_model()).__name__ == "ModelMetaclass" and model.pydantic_model().__name__ == model.__name__


@pytest.mark.parametrize(
    "table",
    [
        {"threshold": 0.9, "max-rows": "7", "mode": "exact", "roles": ["user"]},
        {"threshold": 0},
        {"threshold": 1.5, "max_rows": 1, "mode": "slow"},
        {"roles": ["user", "bot"]},
        {"roles": "user"},
        {"thresold": 0.9},
        {"max-rows": "many", "unknown": {"x": 1}},
    ],
)
def test_validation_values_and_errors_are_pydantics(table):
    try:
        expected = dump(SamplePydantic.model_validate(table))
    except pydantic.ValidationError as exc:
        with pytest.raises(pydantic.ValidationError) as caught:
            Sample.model_validate(table)
        assert plain_errors(caught.value) == plain_errors(exc)
        assert caught.value.title == "Sample"
    else:
        got = Sample.model_validate(table)
        assert isinstance(got, Sample) and dump(got) == expected
        assert Sample(**table) == got


def test_defaults_need_no_twin_and_field_metadata_comes_from_it():
    class Fresh(LightModel):
        """Never validated."""

        size: int = Field(3, ge=1, description="how many")

    assert Fresh().size == 3 and Fresh.model_validate({}).size == 3
    assert Fresh.__dict__.get("_light_twin") is None  # defaults built no pydantic model
    assert Fresh.model_fields["size"].description == "how many"
    assert Fresh.model_json_schema()["properties"]["size"]["minimum"] == 1
    assert Fresh.model_validate({"size": 5}).size == 5


def test_frozen_options_refuse_assignment_and_hash_by_value():
    options = Sample()
    with pytest.raises(TypeError, match="frozen"):
        options.threshold = 0.5
    assert Sample() == Sample() and Sample() != Sample(threshold=0.5)
    assert repr(Sample(max_rows=9)).startswith("Sample(threshold=0.8, max_rows=9")
    budget = TemplateBudgetConfig()
    budget.row_seconds = 1.0  # not frozen, as the pydantic model it stands for
    assert budget.row_seconds == 1.0


def test_a_subclass_validates_its_bases_fields_too():
    assert dump(Extended()) == {**dump(Sample()), "drop": False}
    assert Extended.model_validate({"drop": True, "max-rows": 3}).max_rows == 3
    with pytest.raises(pydantic.ValidationError) as caught:
        Extended.model_validate({"roles": ["bot"]})
    assert "bot is not a role" in str(caught.value)


def test_nested_table_is_validated_and_stays_a_light_model():
    config = parse_config({"template-budget": {"row-seconds": 3}, "select": ["QL"]}, "curate.toml")
    assert isinstance(config, CurateConfig) and isinstance(config.template_budget, TemplateBudgetConfig)
    assert config.template_budget.row_seconds == 3.0 and config.template_budget.run_seconds == 300.0
    assert config.select == ["QL"]
    with pytest.raises(ConfigError) as caught:
        parse_config({"template-budget": {"row-seconds": 0, "zzz": 1}, "fail-on": "sometimes"}, "curate.toml")
    assert caught.value.problems == [
        "curate.toml: `fail-on`: Input should be 'error', 'warning', 'info' or 'never'",
        "curate.toml: `template-budget.row-seconds`: Input should be greater than 0",
        "curate.toml: unknown key `template-budget.zzz`",
    ]
    kept = CurateConfig.model_validate({"template_budget": TemplateBudgetConfig(), "model": "org/name"})
    assert kept.template_budget == TemplateBudgetConfig() and kept.model == "org/name"


def test_pydantic_field_and_validator_declared_in_a_light_model_still_work():
    """A rule written with `from pydantic import Field, field_validator` keeps its defaults and
    its validation (it only gives up the lazy import)."""

    class Written(LightModel):
        """Declared with pydantic's own helpers."""

        size: int = pydantic.Field(3, ge=1)
        roles: list[str] = pydantic.Field(default_factory=lambda: ["user"])

        @pydantic.field_validator("roles")
        @classmethod
        def _known(cls, roles: list[str]) -> list[str]:
            return no_bot(cls, roles)

    assert Written().size == 3 and Written().roles == ["user"]
    assert Written.model_validate({"size": 4}).size == 4
    with pytest.raises(pydantic.ValidationError, match="bot is not a role"):
        Written.model_validate({"roles": ["bot"]})
    with pytest.raises(pydantic.ValidationError, match="greater than or equal to 1"):
        Written(size=0)
