"""Makeflow JSON rules built from argument lists: the one place where commands are quoted."""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

RULE_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
LOG_DIR = "logs"

# `/bin/sh -c COMMAND` gets the whole command as one argument, and Linux caps a single argument
# at 128 KiB (MAX_ARG_STRLEN): keep well below it so huge fan-ins fail here, not on a worker.
MAX_COMMAND_CHARS = 100_000


def check_path(path: str) -> str:
    """Return `path` if it is a clean relative POSIX path, else raise ValueError.

    makeflow -T wq rejects absolute paths, and `..` or a non-normal spelling would let two names
    mean one file (or a file outside the job folder).
    """
    if not isinstance(path, str) or not path:
        raise ValueError(f"path must be a non-empty string: {path!r}")
    if any(c in path for c in "\0\n\r"):
        raise ValueError(f"path holds a control character: {path!r}")
    if path.startswith("/") or "\\" in path:
        raise ValueError(f"path must be relative and use '/': {path!r}")
    if ".." in path.split("/") or posixpath.normpath(path) != path or path == ".":
        raise ValueError(f"path must be normalized, without '..': {path!r}")
    return path


@dataclass(frozen=True)
class Category:
    """Resources Work Queue reserves for each rule of a category (memory and disk in MB), and
    what GDAL may open in its rules: `gdal` lists driver short names, `vsi` the virtual file
    systems it uses on purpose (e.g. "/vsizip/"); `network` that its rules reach a service
    (the sandbox cuts the network of every other rule). Workers hold each rule to these (the
    guard)."""

    cores: int
    memory: int
    disk: int
    gdal: tuple[str, ...] = ()
    vsi: tuple[str, ...] = ()
    network: bool = False

    def __post_init__(self) -> None:
        for name in (*self.gdal, *self.vsi):
            if not name or "," in name:
                raise ValueError(f"bad GDAL driver or file system name: {name!r}")

    def render(self) -> dict:
        environment = {
            "LMWEB_GDAL_DRIVERS": ",".join(self.gdal),
            "LMWEB_GDAL_VSI": ",".join(self.vsi),
        }
        if self.network:
            environment["LMWEB_RULE_NETWORK"] = "1"
        return {
            "resources": {"cores": self.cores, "memory": self.memory, "disk": self.disk},
            "environment": environment,
        }


@dataclass(frozen=True)
class Command:
    """One program run: its arguments and, optionally, a file receiving its standard output."""

    args: tuple[str, ...]
    stdout: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "args", tuple(self.args))
        if not self.args or not all(isinstance(a, str) for a in self.args):
            raise ValueError(f"a command needs string arguments: {self.args!r}")
        if self.stdout is not None:
            check_path(self.stdout)

    def render(self) -> str:
        text = " ".join(shlex.quote(a) for a in self.args)
        if self.stdout is not None:
            text += " > " + shlex.quote(self.stdout)
        return text


@dataclass(frozen=True)
class Rule:
    """A makeflow rule: commands run in sequence (`&&`), with declared inputs and outputs.

    `args` is the first command; `then` holds the ones after it. `scratch` names files the rule
    makes for itself: their folders are created, they are not transferred, and they are removed
    when the rule succeeds. Standard output and error always go to logs/<id>.stdout/.stderr,
    declared as outputs so Work Queue brings them back.
    """

    id: str
    args: Sequence[str]
    inputs: Sequence[str]
    outputs: Sequence[str]
    category: str
    stdout: str | None = None
    then: Sequence[Command | Sequence[str]] = ()
    scratch: Sequence[str] = ()
    commands: tuple[Command, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not RULE_ID.match(self.id):
            raise ValueError(f"unsafe rule id: {self.id!r}")
        first = Command(tuple(self.args), self.stdout)
        rest = tuple(c if isinstance(c, Command) else Command(tuple(c)) for c in self.then)
        object.__setattr__(self, "commands", (first, *rest))
        for name in ("inputs", "outputs", "scratch"):
            paths = tuple(getattr(self, name))
            for path in paths:
                check_path(path)
            if len(set(paths)) != len(paths):
                raise ValueError(f"rule {self.id}: repeated path in {name}")
            object.__setattr__(self, name, paths)
        logs = set(self.logs)
        if logs & (set(self.outputs) | set(self.scratch) | set(self.inputs)):
            raise ValueError(f"rule {self.id}: log paths are reserved")
        for command in self.commands:
            if command.stdout is not None and command.stdout not in (*self.outputs, *self.scratch):
                raise ValueError(f"rule {self.id}: stdout target {command.stdout} is not an output")
        if set(self.inputs) & set(self.outputs):
            raise ValueError(f"rule {self.id}: a file cannot be both input and output")

    @property
    def logs(self) -> tuple[str, str]:
        return (f"{LOG_DIR}/{self.id}.stdout", f"{LOG_DIR}/{self.id}.stderr")

    @property
    def all_outputs(self) -> tuple[str, ...]:
        return (*self.outputs, *self.logs)

    def command(self) -> str:
        """The shell text makeflow hands to `/bin/sh -c`; every argument and path is quoted."""
        folders = sorted({posixpath.dirname(p) for p in (*self.all_outputs, *self.scratch)} - {""})
        steps = [c.render() for c in self.commands]
        if self.scratch:
            steps.append(Command(("rm", "-f", "--", *self.scratch)).render())
        out, err = (shlex.quote(p) for p in self.logs)
        mkdir = Command(("mkdir", "-p", "--", *folders)).render()
        # Folders first: the log redirections below need `logs/` to exist in a fresh sandbox.
        # Spaces around `;` and redirections keep the text splittable by shlex.split (tests).
        text = f"{mkdir} && {{ {' && '.join(steps)} ; }} > {out} 2> {err}"
        if len(text) > MAX_COMMAND_CHARS:
            raise ValueError(f"rule {self.id}: command of {len(text)} characters is too long")
        return text

    def render(self) -> dict:
        return {
            "command": self.command(),
            "inputs": list(self.inputs),
            "outputs": list(self.all_outputs),
            "category": self.category,
            # The worker's guard names the rule when it stops it, in the rule's stderr log.
            "environment": {"LMWEB_RULE": self.id},
        }


def render_makeflow(
    rules: Iterable[Rule],
    categories: dict[str, Category],
    default_category: str,
    sources: Iterable[str],
) -> dict:
    """The makeflow --json document for `rules`, checked to be a closed DAG.

    `sources` are the files present before the workflow starts (staged inputs, written
    configuration). Every rule input must be a source or an output of an earlier rule, and no file
    may be written by two rules.
    """
    rules = list(rules)
    available = {check_path(p) for p in sources}
    produced: dict[str, str] = {}
    private: set[str] = set()
    ids = set()
    for rule in rules:
        if rule.id in ids:
            raise ValueError(f"duplicate rule id: {rule.id}")
        ids.add(rule.id)
        if rule.category not in categories:
            raise ValueError(f"rule {rule.id}: unknown category {rule.category}")
        missing = [p for p in rule.inputs if p not in available and p not in produced]
        if missing:
            raise ValueError(f"rule {rule.id}: inputs made by no earlier rule: {missing}")
        for path in (*rule.all_outputs, *rule.scratch):
            if path in produced or path in available or path in private:
                raise ValueError(f"rule {rule.id}: {path} is already written by another rule")
        produced.update(dict.fromkeys(rule.all_outputs, rule.id))
        # Scratch files never leave the rule's sandbox: no later rule may read them.
        private.update(rule.scratch)
    if default_category not in categories:
        raise ValueError(f"unknown default category {default_category}")
    return {
        "categories": {name: cat.render() for name, cat in sorted(categories.items())},
        "default_category": default_category,
        "rules": [rule.render() for rule in rules],
    }


def parallel_width(document: dict) -> int:
    """How many rules of a makeflow JSON document can run at once, estimated as the largest
    number of rules at the same depth (a rule's depth is one more than its deepest producer's)."""
    rules = document.get("rules", [])

    def name(entry) -> str:
        return entry if isinstance(entry, str) else entry["dag_name"]

    maker = {name(out): index for index, rule in enumerate(rules) for out in rule["outputs"]}
    depth: dict[int, int] = {}
    for index in range(len(rules)):
        pending = [index]
        while pending:  # iterative depth-first: no recursion limit on long chains
            current = pending[-1]
            parents = [maker[name(p)] for p in rules[current]["inputs"] if name(p) in maker]
            missing = [p for p in parents if p not in depth and p != current]
            if missing and len(pending) <= len(rules):
                pending.extend(missing)
                continue
            pending.pop()
            depth[current] = 1 + max((depth.get(p, 0) for p in parents if p != current), default=0)
    counts: dict[int, int] = {}
    for level in depth.values():
        counts[level] = counts.get(level, 0) + 1
    return max(counts.values(), default=0)


# Declared resources grow with what a rule reads: its known input bytes times these, in MB.
MEMORY_PER_INPUT = 4
DISK_PER_INPUT = 3


def size_rules(document: dict, sizes: dict[str, int], *, max_memory: int, max_disk: int) -> dict:
    """A copy of a makeflow document where each rule declares its category's memory and disk
    plus a share of its inputs' sizes (`sizes`: path -> bytes, for the inputs that exist when
    the stage is written), capped at `max_memory` and `max_disk` MB. Workers hold every rule to
    what it declares, so a rule that reads a large input asks for room to hold it."""
    sized = {**document, "rules": []}
    categories = document.get("categories", {})
    default = document.get("default_category")
    for rule in document.get("rules", []):
        rule = dict(rule)
        category = categories.get(rule.get("category", default), {}).get("resources", {})
        names = [p if isinstance(p, str) else p["dag_name"] for p in rule.get("inputs", [])]
        megabytes = -(-sum(sizes.get(name, 0) for name in names) // (1024 * 1024))
        if megabytes and "memory" in category and "disk" in category:
            rule["resources"] = {
                "cores": category.get("cores", 1),
                "memory": max(
                    category["memory"],
                    min(max_memory, category["memory"] + MEMORY_PER_INPUT * megabytes),
                ),
                "disk": max(
                    category["disk"], min(max_disk, category["disk"] + DISK_PER_INPUT * megabytes)
                ),
            }
        sized["rules"].append(rule)
    return sized
