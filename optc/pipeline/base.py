"""The ``Pass`` base class and the checks every pass class must pass to be used.

A pass is a frozen dataclass whose fields are its options::

    @dataclasses.dataclass(frozen=True)
    class FoldConstants(Pass):
        \"\"\"Evaluate nodes whose inputs are all constants ... (docstring required)\"\"\"

        name: ClassVar[str] = "fold-constants"
        exact: ClassVar[bool] = True
        max_bytes: int = dataclasses.field(default=1 << 26, metadata={"help": "..."})

        def run(self, graph: Graph, ctx: PassContext) -> Graph: ...

``run`` is pure and returns the very same graph object when nothing changed.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from optc.errors import UnknownNameError
from optc.ir.graph import Graph
from optc.pipeline.errors import PipelineSyntaxError
from optc.pipeline.options import OptionSpec, coerce, collect_options, format_value

if TYPE_CHECKING:
    from optc.pipeline.context import PassContext

PASS_NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*\Z")
"""kebab-case: lower-case words joined by single hyphens."""


@dataclasses.dataclass(frozen=True)
class Pass:
    """Base of every pass: subclass it with a frozen dataclass (see the module docstring)."""

    name: ClassVar[str] = ""
    exact: ClassVar[bool] = False
    requires: ClassVar[tuple[str, ...]] = ()

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        raise NotImplementedError(f"pass {self.name!r} does not implement run()")

    def candidates(self, graph: Graph, ctx: PassContext) -> Iterable[Pass]:
        """Configured instances for the search to try; none by default."""
        return ()

    # -- options -------------------------------------------------------------------
    @classmethod
    def options(cls) -> tuple[OptionSpec, ...]:
        """The option specs, in field order; ``TypeError`` if a field is malformed."""
        return collect_options(cls)

    @classmethod
    def summary(cls) -> str:
        """The first line of the docstring."""
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    @classmethod
    def configure(cls, options: Mapping[str, Any] | None = None) -> Pass:
        """An instance from option values given as text or TOML values, by option name.

        Field names (``max_bytes``) are accepted as well as option names (``max-bytes``).
        """
        specs = {spec.name: spec for spec in cls.options()}
        values: dict[str, Any] = {}
        for key, raw in (options or {}).items():
            spec = specs.get(key) or specs.get(key.replace("_", "-"))
            if spec is None:
                valid = ", ".join(specs) or "(none)"
                raise UnknownNameError(f"pass {cls.name!r} has no option {key!r}; "
                                       f"valid options: {valid}")
            values[spec.field] = coerce(spec.hint, raw, f"pass {cls.name!r} option {spec.name!r}")
        missing = [s.name for s in specs.values() if s.required and s.field not in values]
        if missing:
            raise PipelineSyntaxError(f"pass {cls.name!r} needs option(s) {', '.join(missing)}")
        return cls(**values)

    def option_values(self, include_defaults: bool = False) -> dict[str, Any]:
        """Option name -> value; by default only the options that differ from their default."""
        found = {}
        for spec in self.options():
            value = getattr(self, spec.field)
            if include_defaults or spec.required or value != spec.default:
                found[spec.name] = value
        return found

    def text(self, include_defaults: bool = False) -> str:
        """Canonical pipeline text of this pass: ``name{opt=value other=a,b}``."""
        values = self.option_values(include_defaults)
        if not values:
            return self.name
        return self.name + "{" + " ".join(f"{k}={format_value(v)}"
                                          for k, v in values.items()) + "}"

    def __str__(self) -> str:
        return self.text()


def pass_class_problems(cls: Any, expected_name: str | None = None) -> list[str]:
    """What keeps ``cls`` from being a usable pass class (empty when it is fine)."""
    if not isinstance(cls, type) or not issubclass(cls, Pass):
        return [f"{cls!r} is not a subclass of optc.pipeline.Pass"]
    problems = []
    params = getattr(cls, "__dataclass_params__", None)
    if "__dataclass_fields__" not in cls.__dict__ or params is None or not params.frozen:
        problems.append("it is not decorated with @dataclasses.dataclass(frozen=True)")
    if not isinstance(cls.name, str) or not PASS_NAME.match(cls.name):
        problems.append(f"its name {cls.name!r} is not kebab-case")
    elif expected_name is not None and cls.name != expected_name:
        problems.append(f"its name {cls.name!r} differs from its entry-point name "
                        f"{expected_name!r}")
    if not isinstance(cls.exact, bool):
        problems.append("its 'exact' class variable is not a bool")
    if not isinstance(cls.requires, tuple) or not all(isinstance(r, str) for r in cls.requires):
        problems.append("its 'requires' class variable is not a tuple of analysis names")
    doc = (cls.__doc__ or "").strip()
    if not doc or doc.startswith(cls.__name__ + "("):  # dataclass's generated signature
        problems.append("it has no docstring")
    if cls.run is Pass.run:
        problems.append("it does not implement run()")
    try:
        cls.options()
    except (TypeError, NameError) as exc:
        problems.append(str(exc))
    return problems
