"""What a PaaS's Python buildpack reads from the tree: requirements.txt and .python-version.

Heroku's buildpack and the Cloud Native (Paketo) ones know a Python app by its
``requirements.txt`` (a bare ``pyproject.toml`` is not enough) and take the Python version
from ``.python-version``.  ``make requirements`` regenerates requirements.txt from
pyproject.toml; these tests fail when the two drift apart.  No network: what a package
requires is read from the metadata of the distributions installed in the running venv.

Assumptions, stated once:

- requirements.txt is universal (``uv pip compile --universal``): a line whose marker is
  false for the running Python (``; python_full_version >= '3.13'``) is left out of every
  comparison, and checked only by a run on such a Python.
- what a pinned package requires of the others is read from the installed distribution's
  metadata, so it is checked only where the installed version equals the pin (after
  ``make .venv/.installed`` on a fresh clone, every one so far); a package installed at
  another version is listed as unchecked (the main test prints the list), not checked.
- the dependency closure is walked through the installed versions as well: for a pin that
  the venv holds at the same version (the case above), it is the pinned one.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

from tests.support.server import ROOT

# What an installed distribution says of itself: its version and its Requires-Dist lines;
# None when it is not installed.
Metadata = Callable[[str], tuple[str, list[str]] | None]


def installed(name: str) -> tuple[str, list[str]] | None:
    """The running venv's distribution ``name``: (version, Requires-Dist), or None."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    return dist.version, list(dist.requires or [])


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def applies(marker: Marker | None, extras: Iterable[str] = ()) -> bool:
    """Whether ``marker`` holds on the running Python, for the base install or one of ``extras``."""
    if marker is None:
        return True
    return any(marker.evaluate({"extra": extra}) for extra in ("", *extras))


@dataclass
class Pins:
    """requirements.txt read for the running Python: name -> pinned version, and its problems."""

    versions: dict[NormalizedName, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    project: bool = False


def read_pins(requirements: str) -> Pins:
    pins = Pins()
    lines = [re.sub(r"(^|\s)#.*", "", raw).strip() for raw in requirements.splitlines()]
    for line in filter(None, lines):
        if line == ".":  # the app's own directory: pip builds the package (quart-sse on the PATH)
            pins.project = True
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement:
            pins.problems.append(f"{line!r} is not a requirement")
            continue
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or req.url:
            pins.problems.append(f"{line!r} is not pinned to one version")
            continue
        if not applies(req.marker):
            continue  # another Python's line (see the module's docstring)
        name = canonicalize_name(req.name)
        if name in pins.versions:
            pins.problems.append(f"{req.name} is pinned twice for this Python")
        pins.versions[name] = specs[0].version
    if not pins.project:
        pins.problems.append("the project itself (.) is not installed")
    return pins


def closure(dependencies: list[str], metadata: Metadata) -> tuple[dict[NormalizedName, set[str]], list[str]]:
    """Every distribution that installing ``dependencies`` brings on the running Python, each
    with the extras asked of it, following each one's Requires-Dist; and the problems met
    (a requirement whose distribution is not installed)."""
    wanted: dict[NormalizedName, set[str]] = {}
    problems: list[str] = []
    todo = [(Requirement(d), "pyproject.toml") for d in dependencies]
    while todo:
        req, by = todo.pop()
        if not applies(req.marker):
            continue
        name = canonicalize_name(req.name)
        extras = {canonicalize_name(e) for e in req.extras}
        if name in wanted and extras <= wanted[name]:
            continue
        wanted.setdefault(name, set()).update(extras)
        found = metadata(name)
        if found is None:
            problems.append(f"{req.name} (required by {by}) is not installed: run `make .venv/.installed`")
            continue
        for line in found[1]:
            sub = Requirement(line)
            if applies(sub.marker, wanted[name]):
                todo.append((sub, name))
    return wanted, problems


def drift(
    dependencies: list[str],
    requirements: str,
    metadata: Metadata = installed,
    unchecked: list[str] | None = None,
) -> list[str]:
    """What keeps ``requirements`` (a requirements.txt) from being exactly the locked install
    of ``dependencies`` (pyproject's) on the running Python; [] when nothing.

    Found: a line that is not one ``==`` pin, the project (``.``) missing, a dependency
    pinned outside its specifier, a package the dependencies do not bring (left over) or
    one they bring that is not pinned, and a pin outside what another pinned package
    requires of it.  Packages installed at another version than their pin are added to
    ``unchecked`` (their own requirements cannot be read without the network)."""
    pins = read_pins(requirements)
    problems = list(pins.problems)
    for dependency in dependencies:
        wanted = Requirement(dependency)
        version = pins.versions.get(canonicalize_name(wanted.name))
        if version is None:
            problems.append(f"{dependency!r} is not pinned")
        elif not wanted.specifier.contains(version, prereleases=True):
            problems.append(f"{wanted.name}=={version} is outside {dependency!r}")
    needed, missing = closure(dependencies, metadata)
    problems += missing
    for name in sorted(pins.versions.keys() - needed.keys()):
        problems.append(f"{name} is pinned but nothing in pyproject.toml's dependencies needs it")
    for name in sorted(needed.keys() - pins.versions.keys()):
        problems.append(f"{name} is needed (through pyproject.toml's dependencies) but not pinned")
    for name, version in sorted(pins.versions.items()):
        found = metadata(name)
        if found is None or found[0] != version:
            if found is not None and unchecked is not None:
                unchecked.append(f"{name} (pinned {version}, installed {found[0]})")
            continue
        for line in found[1]:
            sub = Requirement(line)
            other = pins.versions.get(canonicalize_name(sub.name))
            if other is None or not applies(sub.marker, needed.get(name, ())):
                continue
            if not sub.specifier.contains(other, prereleases=True):
                problems.append(f"{sub.name}=={other} is outside {name}=={version}'s requirement {line!r}")
    return problems


def test_requirements_txt_is_the_locked_install_of_pyproject_dependencies():
    project = pyproject()["project"]
    unchecked: list[str] = []
    problems = drift(project["dependencies"], (ROOT / "requirements.txt").read_text(), unchecked=unchecked)
    if unchecked:  # shown with -rA or on failure: what this venv could not check
        print("not checked against the other pins (installed at another version):", ", ".join(unchecked))
    assert problems == [], "requirements.txt is out of step with pyproject.toml: run `make requirements`"


def fake(packages: dict[str, tuple[str, list[str]]]) -> Metadata:
    return lambda name: packages.get(canonicalize_name(name))


FAKE = fake(
    {
        "quart": ("0.22.0", ["hypercorn>=0.11", "blinker>=1.6", "aiofiles; extra == 'dotenv'"]),
        "hypercorn": ("0.18.0", ["h11", "taskgroup; python_version < '3.11'"]),
        "h11": ("0.16.0", []),
        "blinker": ("1.9.0", []),
    }
)
OK = ".\nquart==0.22.0\nhypercorn==0.18.0\nh11==0.16.0\nblinker==1.9.0\n"


@pytest.mark.parametrize(
    ("requirements", "problem"),
    [
        (".\nquart==0.22.0\nh11==0.16.0\nblinker==1.9.0\n", "'hypercorn>=0.17,<0.19' is not pinned"),
        (OK.replace("0.18.0", "0.19.0"), "hypercorn==0.19.0 is outside 'hypercorn>=0.17,<0.19'"),
        (OK.replace("quart==0.22.0", "quart>=0.20"), "'quart>=0.20' is not pinned to one version"),
        (OK.removeprefix("."), "the project itself (.) is not installed"),
        (OK.replace("blinker==1.9.0", "blinker==1.5"), "blinker==1.5 is outside quart==0.22.0's requirement"),
        (OK + "redis==8.1.0  # via quart-sse\n", "redis is pinned but nothing in pyproject.toml's"),
        (
            OK.replace("h11==0.16.0\n", ""),
            "h11 is needed (through pyproject.toml's",
        ),
        (OK + "taskgroup==0.2.2 ; python_version < '3.11'\n", None),  # another Python's line
        (OK + "aiofiles==25.1.0\n", "aiofiles is pinned but nothing"),  # an extra nobody asks for
        (
            "# header\n"
            + OK.replace("quart", "Quart").replace("h11==0.16.0", "h11==0.16.0  # via hypercorn"),
            None,
        ),
    ],
)
def test_drift_is_found(requirements, problem):
    problems = drift(["quart>=0.20", "hypercorn>=0.17,<0.19"], requirements, FAKE)
    assert any(p.startswith(problem) for p in problems) if problem else problems == []


def test_a_dependency_removed_from_pyproject_but_left_pinned_is_drift():
    """The first-contact case: ``redis>=5`` deleted from pyproject.toml while
    ``redis==…  # via quart-sse`` stays in requirements.txt (real installed metadata)."""
    dependencies = [d for d in pyproject()["project"]["dependencies"] if not d.startswith("redis")]
    problems = drift(dependencies, (ROOT / "requirements.txt").read_text())
    assert "redis is pinned but nothing in pyproject.toml's dependencies needs it" in problems


def test_a_pin_inconsistent_with_another_pin_is_drift():
    """The first-contact case: ``pydantic-core==2.0.0`` next to ``pydantic==2.14.4``, which
    requires its own pydantic-core exactly (real installed metadata)."""
    text = (ROOT / "requirements.txt").read_text()
    broken, count = re.subn(r"(?m)^pydantic-core==\S+", "pydantic-core==2.0.0", text)
    assert count == 1
    problems = drift(pyproject()["project"]["dependencies"], broken)
    assert any(p.startswith("pydantic-core==2.0.0 is outside pydantic==") for p in problems), problems


def test_python_version_is_one_the_project_supports():
    text = (ROOT / ".python-version").read_text().strip()
    # Both buildpacks read a minor version ("3.11": its latest patch) or an exact one ("3.11.7").
    assert re.fullmatch(r"3\.\d+(\.\d+)?", text), f".python-version holds {text!r}: expected e.g. 3.11"
    requires = SpecifierSet(pyproject()["project"]["requires-python"])
    assert Version(text) in requires, f".python-version {text} is outside requires-python {requires}"
