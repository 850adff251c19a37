"""The command line's help and the usage errors found before a command runs.

These exit while parsing, before a command changes any process state, so
they run in this process (``cli.main.run``); test_cli.py runs the commands
themselves in subprocesses.
"""

import pytest

from conftest import packaged_configs
from seqclf.cli import main as cli_main


def _run(capsys, *args: str) -> tuple[int, str, str]:
  """``seqclf ARGS`` here: its exit status, stdout and stderr."""
  with pytest.raises(SystemExit) as e:
    cli_main.run(['seqclf', *args])
  out = capsys.readouterr()
  return e.value.code, out.out, out.err


@pytest.mark.parametrize('args', [(), ('bogus',)])
def test_no_command_is_usage_error(capsys, args):
  status, _, err = _run(capsys, *args)
  assert status == 2, err
  assert 'give a command: prepare-data, train' in err
  assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize('args', [('--help',), ('-h',), ('train', '-h'),
                                  ('--config', 'default', '--help')])
def test_help_lists_the_commands_or_a_commands_flags(capsys, args):
  status, out, err = _run(capsys, *args)
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
def test_every_command_has_help_with_one_line_per_flag(capsys, command):
  status, out, err = _run(capsys, command, '--help')
  assert status == 0, err
  assert out.startswith(f'usage: seqclf {command} ')
  flag_lines = out.split('flags:\n', 1)[1].split('\n\n')[0]
  flags = cli_main.command_module(command).FLAGS
  names = [name for name in flags if flags[name].name == name]
  assert len(flag_lines.splitlines()) == len(names)
  for line, name in zip(flag_lines.splitlines(), names):
    assert line.split()[0] in (f'--{name}', f'--[no]{name}')


def test_unknown_flag_is_quoted_whole(capsys):
  status, _, err = _run(capsys, 'train', '--bogus')
  assert status == 2
  assert err.strip() == "seqclf: error: Unknown command line flag 'bogus'"


def test_unexpected_argument_is_one_line(capsys):
  status, _, err = _run(capsys, 'evaluate', 'extra')
  assert status == 2
  assert err.strip() == ("seqclf evaluate: error: unexpected arguments "
                         "['extra'] (`seqclf evaluate --help` lists its "
                         "flags).")
