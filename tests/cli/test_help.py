"""The command line's help and the usage errors found before a command runs.

These exit while parsing, before a command changes any process state, so
they run in this process (``cli.main.run``); test_cli.py runs the commands
themselves in subprocesses (config overrides among them: ml_collections
defines their flags once per process).
"""

import sys

import pytest

from conftest import packaged_configs
from seqclf.cli import main as cli_main


@pytest.fixture
def run(capsys, monkeypatch):
  """``seqclf ARGS`` here, as the console script runs it (ml_collections
  reads config overrides from sys.argv): its exit status, stdout, stderr."""
  def run_(*args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, 'argv', ['seqclf', *args])
    with pytest.raises(SystemExit) as e:
      cli_main.run()
    out = capsys.readouterr()
    return e.value.code, out.out, out.err
  return run_


@pytest.mark.parametrize('args', [(), ('bogus',)])
def test_no_command_is_usage_error(run, args):
  status, _, err = run(*args)
  assert status == 2, err
  assert 'give a command: prepare-data, train' in err
  assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize('args', [('--help',), ('-h',), ('train', '-h'),
                                  ('--config', 'default', '--help')])
def test_help_lists_the_commands_or_a_commands_flags(run, args):
  status, out, err = run(*args)
  assert status == 0 and not err, err
  if 'train' in args:
    assert out.startswith('usage: seqclf train --config NAME|FILE')
    assert '--workdir' in out and '--[no]report' in out
    assert 'configs: ' + ', '.join(packaged_configs()) in out
  else:
    assert out.startswith('usage: seqclf COMMAND')
    for command in cli_main.COMMANDS:
      assert f'\n  {command} ' in out


@pytest.mark.parametrize('command', cli_main.COMMANDS)
def test_every_command_has_help_with_one_line_per_flag(run, command):
  status, out, err = run(command, '--help')
  assert status == 0, err
  assert out.startswith(f'usage: seqclf {command} ')
  flag_lines = out.split('flags:\n', 1)[1].split('\n\n')[0]
  flags = cli_main.command_module(command).FLAGS
  names = [name for name in flags if flags[name].name == name]
  assert len(flag_lines.splitlines()) == len(names)
  for line, name in zip(flag_lines.splitlines(), names):
    assert line.split()[0] in (f'--{name}', f'--[no]{name}')


def test_unknown_flag_is_quoted_whole(run):
  status, _, err = run('train', '--bogus')
  assert status == 2
  assert err.strip() == ("seqclf train: error: Unknown command line flag "
                         "'bogus'")


def test_unexpected_argument_is_one_line(run):
  status, _, err = run('evaluate', 'extra')
  assert status == 2
  assert err.strip() == ("seqclf evaluate: error: unexpected arguments "
                         "['extra'] (`seqclf evaluate --help` lists its "
                         "flags).")
