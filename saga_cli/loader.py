"""Finding users' sagas: ``MODULE_OR_FILE[:NAME]`` references, as ``saga run`` takes them.

``examples/bank_transfer.py:transfer`` imports the file; ``shop.sagas:order``
imports the module (the current directory is on the path, as with
``python -m``). ``NAME`` is the saga's Python name or the name it was given
(``examples/bank_transfer.py:bank-transfer``, as ``saga list`` shows it).
Without ``:NAME`` the module must hold exactly one saga.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from saga_cli.domain import SagaDefinition
from saga_cli.errors import InvalidInputError, SagaError
from saga_cli.saga import Saga, as_definition


def split_reference(reference: str) -> tuple[str, str | None]:
    """Split ``where[:name]``; a ``:`` inside a Windows drive or a path is not a separator."""
    where, sep, name = reference.rpartition(":")
    if not sep or "/" in name or "\\" in name or name.endswith(".py") or not where:
        return reference, None
    return where, name


def _import(where: str) -> tuple[ModuleType, str]:
    """Import a file or a module; return it and the canonical form of `where`.

    Raises:
        InvalidInputError: no such file or module, or importing it failed.
    """
    path = Path(where)
    if not where.strip():
        raise InvalidInputError("give the saga as MODULE_OR_FILE[:SAGA], e.g. shop/sagas.py:order")
    if path.is_dir():
        raise InvalidInputError(f"{where} is a directory; give a .py file or a module name")
    if where.endswith(".py") or path.is_file():
        if not path.is_file():
            raise InvalidInputError(f"no such file: {where}")
        resolved = path.resolve()
        # A stable module name per file, so that loading it twice is one import.
        name = "saga_user_" + hashlib.sha1(str(resolved).encode()).hexdigest()[:12]
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, resolved)
            if spec is None or spec.loader is None:
                raise InvalidInputError(f"{where} cannot be imported as Python")
            module = importlib.util.module_from_spec(spec)
            # Its siblings import as they would when it runs as a script.
            sys.path.insert(0, str(resolved.parent))
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except SagaError:
                del sys.modules[name]
                raise
            except Exception as exc:
                del sys.modules[name]
                raise InvalidInputError(
                    f"importing {where} failed: {type(exc).__name__}: {exc}"
                ) from None
        return module, str(resolved)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(where), where
    except ModuleNotFoundError as exc:
        if exc.name and where.startswith(exc.name):
            raise InvalidInputError(
                f"no module or file named {where!r} (give a path to a .py file or an "
                "importable module)"
            ) from None
        raise InvalidInputError(f"importing {where} failed: {exc}") from None
    except SagaError:
        raise
    except Exception as exc:
        raise InvalidInputError(f"importing {where} failed: {type(exc).__name__}: {exc}") from None


def sagas_in(module: ModuleType) -> dict[str, Saga | SagaDefinition]:
    """The sagas a module defines at top level, by attribute name."""
    return {
        attr: value
        for attr, value in vars(module).items()
        if isinstance(value, Saga | SagaDefinition) and not attr.startswith("_")
    }


def _attribute_of(where: str, found: dict[str, Saga | SagaDefinition], name: str) -> str:
    """The attribute holding the saga `name`: its Python name, or the name it was given.

    ``bank_transfer.py:transfer`` and ``bank_transfer.py:bank-transfer`` (what
    ``saga list`` shows) are the same saga; the Python name wins a tie.

    Raises:
        InvalidInputError: no saga has that name, or several were given it.
    """
    if name in found:
        return name
    named = [attr for attr, saga in found.items() if saga.name == name]
    if len(named) == 1:
        return named[0]
    if named:
        raise InvalidInputError(
            f"{where} has several sagas named {name!r} ({', '.join(sorted(named))}); "
            "give the Python name"
        )
    known = ", ".join(
        attr if saga.name == attr else f"{attr} ({saga.name})"
        for attr, saga in sorted(found.items())
    )
    raise InvalidInputError(f"{where} has no saga named {name!r} (sagas: {known or 'none'})")


def load(reference: str) -> list[SagaDefinition]:
    """Import `reference` and return the saga(s) it names, each knowing its source.

    ``where:name`` gives that one saga; plain ``where`` gives every saga the
    module defines (at least one).

    Raises:
        InvalidInputError: nothing to import, no such saga, or no saga at all.
        DefinitionError: a saga's steps do not make a valid definition.
    """
    where, name = split_reference(reference)
    module, canonical = _import(where)
    found = sagas_in(module)
    if name is not None:
        attribute = _attribute_of(where, found, name)
        found = {attribute: found[attribute]}
    if not found:
        raise InvalidInputError(f"{where} defines no saga (a module-level Saga or SagaDefinition)")
    definitions = []
    for attr, saga in found.items():
        source = f"{canonical}:{attr}"
        if isinstance(saga, Saga):
            saga.source = source
            saga._changed()
        definition = as_definition(saga)
        if definition.source != source:
            import dataclasses

            definition = dataclasses.replace(definition, source=source)
        definitions.append(definition)
    return definitions


def load_one(reference: str) -> SagaDefinition:
    """Import `reference` and return exactly one saga.

    Raises:
        InvalidInputError: it names none, or several and no ``:NAME`` picks one.
    """
    definitions = load(reference)
    if len(definitions) > 1:
        names = ", ".join(d.source.rpartition(":")[2] for d in definitions if d.source)
        raise InvalidInputError(f"{reference} defines several sagas ({names}); add :NAME")
    return definitions[0]
