"""Read deploy/: the Dockerfile, the Compose file, the Kubernetes manifests, the nginx config.

Small parsers, enough for the files we ship: a Dockerfile's instructions (continuation lines
joined, ``ARG`` defaults substituted into ``FROM``), YAML documents, nginx directives.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = DEPLOY / "docker-compose.yml"
KUBERNETES = DEPLOY / "kubernetes"
NGINX_CONF = DEPLOY / "nginx" / "nessen.conf"
APP = "nessen-runtime"
"""The ``app`` label and name of the Nessen Deployment, Service and container."""


# --- Dockerfile ---------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    """Upper-case: FROM, RUN, ENV, CMD, ..."""
    args: str
    """The rest of the logical line, continuation lines joined with a space."""

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form CMD/ENTRYPOINT/HEALTHCHECK CMD.

        Raises:
            ValueError: The arguments are not a JSON array of strings (shell form).
        """
        text = self.args
        if self.keyword == "HEALTHCHECK":
            text = text[text.index(" CMD ") + len(" CMD ") :]
        value = json.loads(text)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{self.keyword} is not in exec form: {self.args}")
        return value


@dataclass
class Stage:
    image: str
    """The FROM image with ARG defaults substituted."""
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.image} has no {keyword}"
        return found[-1]

    def env(self) -> dict[str, str]:
        """The variables this stage's ENV instructions set (``${VAR}`` left as written)."""
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for item in shlex.split(instruction.args):
                name, sep, value = item.partition("=")
                assert sep, f"ENV {instruction.args!r}: use the NAME=value form"
                values[name] = value
        return values


def dockerfile_stages(path: Path = DOCKERFILE) -> list[Stage]:
    """Parse a Dockerfile into its build stages, in order."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], rest)
            words = image.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(image=words[0], name=name))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append(Instruction(keyword, rest))
    return stages


def final_stage() -> Stage:
    return dockerfile_stages()[-1]


# --- YAML -------------------------------------------------------------------------------------


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def compose() -> dict[str, Any]:
    return load_yaml_documents(COMPOSE)[0]


def kubernetes_files() -> list[Path]:
    """Every manifest in deploy/kubernetes except kustomization.yaml (not a resource)."""
    return sorted(p for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")


def kubernetes_resources() -> list[dict[str, Any]]:
    return [doc for path in kubernetes_files() for doc in load_yaml_documents(path)]


def resource(kind: str, name: str) -> dict[str, Any]:
    found = [
        r for r in kubernetes_resources() if r["kind"] == kind and r["metadata"]["name"] == name
    ]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def app_container() -> dict[str, Any]:
    containers = resource("Deployment", APP)["spec"]["template"]["spec"]["containers"]
    (container,) = (c for c in containers if c["name"] == APP)
    return container


def container_env(container: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container.get("env", []):
        assert "value" in item, f"{item['name']}: only literal values are checked here"
        env[item["name"]] = item["value"]
    return env


def container_port(container: dict[str, Any], port: int | str) -> int:
    """Resolve a probe's or Service's port (a number or a port name) to the container port."""
    if isinstance(port, int):
        return port
    (number,) = (p["containerPort"] for p in container["ports"] if p.get("name") == port)
    return int(number)


# --- nginx ------------------------------------------------------------------------------------


def nginx_directives(path: Path = NGINX_CONF) -> dict[str, list[str]]:
    """Directive name -> the argument text of each occurrence, comments stripped."""
    text = "\n".join(line.partition("#")[0] for line in path.read_text().splitlines())
    found: dict[str, list[str]] = {}
    for match in re.finditer(r"(?m)^\s*([a-z_0-9]+)\s+([^;{}]*);", text):
        found.setdefault(match[1], []).append(match[2].strip())
    return found


_NGINX_TIME_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}
_NGINX_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024 * 1024, "g": 1024**3}


def nginx_seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m|h|)", value.strip())
    assert match, f"not an nginx time: {value!r}"
    return int(match[1]) * _NGINX_TIME_UNITS[match[2]]


def nginx_bytes(value: str) -> int:
    match = re.fullmatch(r"(\d+)([kmg]?)", value.strip().lower())
    assert match, f"not an nginx size: {value!r}"
    return int(match[1]) * _NGINX_SIZE_UNITS[match[2]]


def compose_seconds(value: str) -> float:
    """A Compose duration such as ``30s``, ``1m30s`` or ``500ms``."""
    total = 0.0
    rest = value.strip()
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", rest):
        total += float(number) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}[unit]
    assert re.fullmatch(r"(\d+(\.\d+)?(ms|us|h|m|s))+", rest), f"not a duration: {value!r}"
    return total
