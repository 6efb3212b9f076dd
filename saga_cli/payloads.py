"""Payload models: validating a saga's input against the pydantic model it declares.

pydantic is imported only here, and only when a saga declares a model, so
the travel demo and ``saga --help`` never pay for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from saga_cli.errors import InvalidInputError


def validate_payload(model: type[Any], data: Mapping[str, Any], saga: str) -> Any:
    """Return `data` as an instance of `model` (a pydantic model, SQLModel included).

    Raises:
        InvalidInputError: `data` does not fit; the message names each field.
    """
    from pydantic import ValidationError

    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'payload'}: {error['msg']}"
            for error in exc.errors()
        )
        raise InvalidInputError(f"payload of saga {saga!r} is invalid: {problems}") from None
    except AttributeError:
        raise InvalidInputError(
            f"saga {saga!r} declares payload={model!r}, which is not a pydantic model"
        ) from None


def payload_as_json(model: type[Any], data: Mapping[str, Any], saga: str) -> dict[str, Any]:
    """Validate `data` and return what the log stores: the model's JSON form, defaults filled.

    Raises:
        InvalidInputError: `data` does not fit the model.
    """
    instance = validate_payload(model, data, saga)
    dumped: dict[str, Any] = instance.model_dump(mode="json")
    return dumped
