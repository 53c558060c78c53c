"""Reading rendered makeflow rules back, for the translator tests."""

import shlex


def rules_by_id(stage) -> dict:
    """A stage's rules by their id (taken from the rule's own stderr log name)."""
    by_id = {}
    for rule in stage.makeflow["rules"]:
        by_id[rule["command"].rsplit("2> logs/", 1)[1].removesuffix(".stderr")] = rule
    return by_id


def steps(rule) -> list[list[str]]:
    """The argument lists of a rule's commands, between `{` and `;`."""
    tokens = shlex.split(rule["command"])
    body = tokens[tokens.index("{") + 1 : len(tokens) - 1 - tokens[::-1].index(";")]
    commands, current = [], []
    for token in body:
        if token == "&&":
            commands.append(current)
            current = []
        else:
            current.append(token)
    return [*commands, current]


def assert_makeflow_accepts(stage, folder) -> None:
    """makeflow_analyze -k finds the stage's document well formed."""
    import subprocess

    path = folder / f"{stage.name}.json"
    path.write_text(stage.dumps(), encoding="utf-8")
    result = subprocess.run(
        ["makeflow_analyze", "-k", "--json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Syntax OK" in result.stdout + result.stderr
