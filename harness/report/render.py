"""The Jinja2 environment every page and picture is rendered with (autoescaped, strict)."""
from functools import lru_cache

from jinja2 import Environment, PackageLoader, StrictUndefined


@lru_cache(maxsize=1)
def env() -> Environment:
    # StrictUndefined: a misspelt field fails the build instead of leaving a blank in the page.
    return Environment(loader=PackageLoader("harness.report", "templates"), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render(template: str, **context) -> str:
    return env().get_template(template).render(**context)
