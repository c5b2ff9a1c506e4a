"""Settings models that cost nothing until something is validated.

The config file's tables and every rule's options are declared like pydantic models
(`Field(...)`, `field_validator`), but a `LightModel` does not import pydantic when it is
defined or built from its defaults: a plain `curate lint` (pre-commit, no options set) then
starts without pydantic, about a fifth of its start-up. The first time values are validated
(a config table, `--set`, `Options(threshold=0.9)`), the class builds its pydantic twin from
the same declarations (same name, module, fields, validators and config) and pydantic does
the validating, so errors and their messages are pydantic's own. `model_fields` and
`model_json_schema` are the twin's.

What a LightModel gives up: defaults are not validated (pydantic does not validate them
either), and nothing of pydantic's instance API but attribute access, `==`, `hash` (frozen
models), `repr` and `model_dump`.
"""

from __future__ import annotations

from typing import Any

#: `model_config = ConfigDict(...)` as in pydantic: a plain dict of pydantic config keys.
ConfigDict = dict

_MISSING = object()


class FieldSpec:
    """What `Field(...)` was called with, for the pydantic twin; and the field's default."""

    __slots__ = ("args", "kwargs")

    def __init__(self, args: tuple, kwargs: dict[str, Any]):
        self.args = args
        self.kwargs = kwargs

    def default(self) -> Any:
        """The default value (a factory's result), or _MISSING for a required field."""
        if self.kwargs.get("default_factory") is not None:
            return self.kwargs["default_factory"]()
        value = self.args[0] if self.args else self.kwargs.get("default", ...)
        return _MISSING if value is ... else value


def Field(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 (named as pydantic's)
    """pydantic's `Field`, recorded: the same arguments go to pydantic when the twin is built."""
    return FieldSpec(args, kwargs)


class ValidatorSpec:
    """A `field_validator` of a LightModel, handed to pydantic's when the twin is built."""

    __slots__ = ("function", "fields", "kwargs")

    def __init__(self, function: Any, fields: tuple[str, ...], kwargs: dict[str, Any]):
        self.function = function
        self.fields = fields
        self.kwargs = kwargs


def field_validator(*fields: str, **kwargs: Any):
    """pydantic's `field_validator`, recorded for the twin (stack it over `@classmethod`)."""

    def decorate(function: Any) -> ValidatorSpec:
        return ValidatorSpec(function, fields, kwargs)

    return decorate


class _LightMeta(type):
    @property
    def model_fields(cls) -> dict[str, Any]:
        """The pydantic twin's fields (FieldInfo by name): descriptions, aliases, defaults."""
        return cls.pydantic_model().model_fields


class LightModel(metaclass=_LightMeta):
    """Base of settings models whose pydantic validation is built on first use."""

    model_config: dict[str, Any] = {}
    #: name -> FieldSpec (a pydantic FieldInfo works too) or plain default, this class's and its
    #: bases', in declaration order. Validators stay in the class dict until the twin is built.
    _light_fields: dict[str, Any] = {}
    _light_twin: Any = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields = dict(cls._light_fields)
        for name, annotation in cls.__dict__.get("__annotations__", {}).items():
            if name.startswith("_") or "ClassVar" in str(annotation):
                continue
            fields[name] = cls.__dict__.get(name, _MISSING)
            if name in cls.__dict__:
                delattr(cls, name)  # as in pydantic, a field is not a class attribute
        cls._light_fields = fields
        cls._light_twin = None

    def __init__(self, **values: Any) -> None:
        if values or self._light_required():
            self._light_copy(type(self).pydantic_model().model_validate(values))
            return
        for name, spec in self._light_fields.items():
            object.__setattr__(self, name, _default(spec))

    @classmethod
    def _light_required(cls) -> bool:
        return any(_required(spec) for spec in cls._light_fields.values())

    @classmethod
    def model_validate(cls, data: Any) -> LightModel:
        """Validate `data` (a dict of field names or aliases); raises pydantic's ValidationError.
        An empty dict is the defaults, without building the twin."""
        if isinstance(data, cls):
            return data
        if isinstance(data, dict) and not data and not cls._light_required():
            return cls()
        return cls._from_twin(cls.pydantic_model().model_validate(data))

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return cls.pydantic_model().model_json_schema(*args, **kwargs)

    @classmethod
    def _from_twin(cls, validated: Any) -> LightModel:
        light = cls.__new__(cls)
        light._light_copy(validated)
        return light

    def _light_copy(self, validated: Any) -> None:
        for name in self._light_fields:
            object.__setattr__(self, name, getattr(validated, name))

    @classmethod
    def pydantic_model(cls) -> type:
        """The pydantic model of the same declarations, built once (this imports pydantic)."""
        if cls.__dict__.get("_light_twin") is None:
            cls._light_twin = _build_twin(cls)
        return cls._light_twin

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        """A LightModel field of another model: validated as the twin, kept as a LightModel."""
        from pydantic_core import core_schema

        twin = cls.pydantic_model()

        def to_twin(value: Any) -> Any:
            return twin.model_construct(**value.model_dump()) if isinstance(value, cls) else value

        return core_schema.no_info_before_validator_function(to_twin, core_schema.no_info_after_validator_function(cls._from_twin, handler(twin)))

    def model_dump(self) -> dict[str, Any]:
        return {name: value.model_dump() if isinstance(value, LightModel) else value for name, value in self._light_items()}

    def _light_items(self) -> list[tuple[str, Any]]:
        return [(name, getattr(self, name)) for name in self._light_fields]

    def __setattr__(self, name: str, value: Any) -> None:
        if self.model_config.get("frozen"):
            raise TypeError(f"{type(self).__name__} is frozen; `{name}` cannot be set")
        if name not in self._light_fields:
            raise AttributeError(f"{type(self).__name__} has no field `{name}`")
        object.__setattr__(self, name, value)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._light_items() == other._light_items()

    def __hash__(self) -> int:
        if not self.model_config.get("frozen"):
            raise TypeError(f"unhashable type: '{type(self).__name__}'")
        return hash((type(self), tuple(value for _, value in self._light_items())))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{name}={value!r}' for name, value in self._light_items())})"


def _is_pydantic_field(spec: Any) -> bool:
    """A `pydantic.Field(...)` declared in a LightModel (pydantic is then imported already)."""
    return type(spec).__name__ == "FieldInfo" and type(spec).__module__.startswith("pydantic")


def _required(spec: Any) -> bool:
    if isinstance(spec, FieldSpec):
        return spec.kwargs.get("default_factory") is None and (spec.args[0] if spec.args else spec.kwargs.get("default", ...)) is ...
    if _is_pydantic_field(spec):
        return spec.is_required()
    return spec is _MISSING


def _default(spec: Any) -> Any:
    """A field's default (a factory's result), or _MISSING for a required field."""
    if isinstance(spec, FieldSpec):
        return spec.default()
    if _is_pydantic_field(spec):
        return _MISSING if spec.is_required() else spec.get_default(call_default_factory=True)
    return spec


def _build_twin(cls: type[LightModel]) -> type:
    """`class <name>(<base's twin>)` with this class's own annotations, fields and validators."""
    import pydantic

    base = next(klass for klass in cls.__mro__[1:] if issubclass(klass, LightModel))
    parent = pydantic.BaseModel if base is LightModel else base.pydantic_model()
    own = cls.__dict__.get("__annotations__", {})
    namespace: dict[str, Any] = {"__module__": cls.__module__, "__qualname__": cls.__qualname__, "__doc__": cls.__doc__, "__annotations__": {}}
    if "model_config" in cls.__dict__:
        namespace["model_config"] = pydantic.ConfigDict(**cls.__dict__["model_config"])
    for name, annotation in own.items():
        if name not in cls._light_fields:
            continue
        namespace["__annotations__"][name] = annotation
        spec = cls._light_fields[name]
        if isinstance(spec, FieldSpec):
            namespace[name] = pydantic.Field(*spec.args, **spec.kwargs)
        elif spec is not _MISSING:
            namespace[name] = spec
    for name, validator in cls.__dict__.items():
        if isinstance(validator, ValidatorSpec):
            namespace[name] = pydantic.field_validator(*validator.fields, **validator.kwargs)(validator.function)
        elif type(validator).__name__ == "PydanticDescriptorProxy":  # `from pydantic import field_validator`
            namespace[name] = validator
    return type(cls.__name__, (parent,), namespace)
