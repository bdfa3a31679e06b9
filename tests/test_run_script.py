"""run.py, the README's two commands: the project environment is installed once and again
only when pyproject.toml changes; a failed installation is retried on the next call."""

import subprocess

import pytest

import run


@pytest.fixture
def fake_checkout(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    monkeypatch.setattr(run, "ROOT", tmp_path)
    monkeypatch.setattr(run, "VENV", tmp_path / ".venv")
    monkeypatch.setattr(run, "STAMP", tmp_path / ".venv" / "stamp")
    commands, results = [], []

    def fake_run(command, **kwargs):
        commands.append([str(c) for c in command[1:]])
        if command[1:3] == ["-m", "pip"] and "--upgrade" not in command:
            return subprocess.CompletedProcess(command, results.pop(0) if results else 0)
        return subprocess.CompletedProcess(command, 0)

    def fake_create(self, env_dir):
        run.venv_python().parent.mkdir(parents=True)
        run.venv_python().write_text("")

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(run.venv.EnvBuilder, "create", fake_create)
    return tmp_path, commands, results


def _installs(commands):
    return [c for c in commands if "-e" in c]


def test_installs_once_then_again_when_pyproject_changes(fake_checkout):
    root, commands, _ = fake_checkout
    python = run.ensure_environment()
    assert python == run.venv_python() and python.is_relative_to(root / ".venv")
    assert _installs(commands) == [["-m", "pip", "install", "--quiet", "-e", ".[test]"]]
    assert ["-m", "pip", "install", "--quiet", "--upgrade", "pip"] in commands
    run.ensure_environment()
    assert len(_installs(commands)) == 1  # up to date: nothing installed
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\nversion = '2'\n")
    run.ensure_environment()
    assert len(_installs(commands)) == 2


def test_failed_install_exits_and_is_retried(fake_checkout):
    _, commands, results = fake_checkout
    results.append(1)
    with pytest.raises(SystemExit, match="installation failed"):
        run.ensure_environment()
    run.ensure_environment()  # no stamp was written: installs again
    assert len(_installs(commands)) == 2


def test_unknown_command_prints_usage_and_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        run.main(["bench"])
    assert exit_.value.code == 2 and "run.py reproduce" in capsys.readouterr().err
