"""What a PaaS's Python buildpack reads from the tree: requirements.txt and .python-version.

Heroku's buildpack and the Cloud Native (Paketo) ones know a Python app by its
``requirements.txt`` (a bare ``pyproject.toml`` is not enough) and take the Python version
from ``.python-version``.  ``make requirements`` regenerates requirements.txt from
pyproject.toml; these tests fail when the two drift apart.  Everything is read from the
tree: no network.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.support.server import ROOT


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def drift(dependencies: list[str], requirements: str) -> list[str]:
    """What keeps ``requirements`` (a requirements.txt) from installing the project with
    every one of ``dependencies`` (pyproject's) pinned within its specifier; [] when nothing."""
    problems: list[str] = []
    lines = [re.sub(r"(^|\s)#.*", "", raw).strip() for raw in requirements.splitlines()]
    pinned: dict[str, list[str]] = {}
    for line in filter(None, lines):
        if line == ".":  # the app's own directory: pip builds the package (quart-sse on the PATH)
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement:
            problems.append(f"{line!r} is not a requirement")
            continue
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or req.url:
            problems.append(f"{line!r} is not pinned to one version")
            continue
        pinned.setdefault(canonicalize_name(req.name), []).append(specs[0].version)
    if "." not in lines:
        problems.append("the project itself (.) is not installed")
    for dependency in dependencies:
        wanted = Requirement(dependency)
        versions = pinned.get(canonicalize_name(wanted.name))
        if not versions:
            problems.append(f"{dependency!r} is not pinned")
        for version in versions or ():
            if not wanted.specifier.contains(version, prereleases=True):
                problems.append(f"{wanted.name}=={version} is outside {dependency!r}")
    return problems


def test_requirements_txt_pins_every_runtime_dependency_and_installs_the_project():
    project = pyproject()["project"]
    problems = drift(project["dependencies"], (ROOT / "requirements.txt").read_text())
    assert problems == [], "requirements.txt is out of step with pyproject.toml: run `make requirements`"


@pytest.mark.parametrize(
    ("requirements", "problem"),
    [
        (".\nquart==0.22.0\n", "'hypercorn>=0.17,<0.19' is not pinned"),
        (".\nquart==0.22.0\nhypercorn==0.19.0\n", "hypercorn==0.19.0 is outside 'hypercorn>=0.17,<0.19'"),
        (".\nquart>=0.20\nhypercorn==0.18.0\n", "'quart>=0.20' is not pinned to one version"),
        ("quart==0.22.0\nhypercorn==0.18.0\n", "the project itself (.) is not installed"),
        ("# header\n.\nQuart==0.22.0\nhypercorn==0.18.0  # via quart-sse\n", None),
    ],
)
def test_drift_is_found(requirements, problem):
    problems = drift(["quart>=0.20", "hypercorn>=0.17,<0.19"], requirements)
    assert problem in problems if problem else problems == []


def test_python_version_is_one_the_project_supports():
    text = (ROOT / ".python-version").read_text().strip()
    # Both buildpacks read a minor version ("3.11": its latest patch) or an exact one ("3.11.7").
    assert re.fullmatch(r"3\.\d+(\.\d+)?", text), f".python-version holds {text!r}: expected e.g. 3.11"
    requires = SpecifierSet(pyproject()["project"]["requires-python"])
    assert Version(text) in requires, f".python-version {text} is outside requires-python {requires}"
