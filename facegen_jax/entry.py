"""`run(main)`: `absl.app.run` for every facegen-jax command-line tool, with a `--help` that lists
the tool's own flags and exits 0, and one error convention for all of them:

- a user error (`USER_ERRORS`: a missing or unreadable file, a bad value, a file without a face, a
  checkpoint of another config; raised anywhere below `main`) prints `error: <message>` (one line
  per line of the message) on stderr and exits 1;
- a usage error (a flag absl cannot parse, a missing required flag, `app.UsageError`) prints
  `error: <message>` and a pointer to `--help`, and exits 2;
- any other exception is a bug and keeps its traceback.

absl's `--help` lists only the main module's flags and exits 1; a tool whose flags live in an
imported module (`facegen-reenact`: facegen_jax/inference/cli.py) names that module in
`flag_modules`. This module imports nothing of facegen_jax (the bottom layer).
"""

import sys
from typing import Callable, NoReturn, Optional, Sequence

from absl import app, flags

SHORT_HELP = ("--help", "-help", "--helpshort", "-helpshort", "-?", "-h")
FULL_HELP = ("--helpfull", "-helpfull")
# OSError covers missing, unreadable and unwritable paths (FileNotFoundError, PermissionError, ...);
# ValueError bad values and bad files (the package's own errors for files without a face, damaged or
# mismatched checkpoints and bad configs are ValueErrors).
USER_ERRORS = (OSError, ValueError)
USAGE_EXIT, USER_EXIT = 2, 1


def fail(error, exitcode: int = USER_EXIT, hint: str = "") -> NoReturn:
  """Prints `error: <line>` for every line of `error` (an exception or text) and exits `exitcode`."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
  if hint:
    lines[-1] += hint
  sys.stderr.write("".join(f"error: {line}\n" for line in lines))
  sys.stderr.flush()
  sys.exit(exitcode)


def run(main: Callable, flag_modules: Sequence[str] = (), flags_parser: Optional[Callable] = None):
  """`app.run(main, flags_parser)`, after making the flags of `flag_modules` part of `--help`, with
  the error convention of the module docstring.

  `--help` prints the main module's docstring and the tool's flags to stdout and exits 0
  (`--helpfull`: every flag, absl's included). `flags_parser` (default: absl's) may raise
  `flags.Error`, a usage error.
  """
  for module in flag_modules:
    for flag in flags.FLAGS.get_flags_for_module(module):
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  parse = flags_parser or flags.FLAGS
  hint = " (--help lists the flags)"

  def parse_or_help(argv):
    options = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    if any(a in SHORT_HELP or a in FULL_HELP for a in options):
      app.usage(shorthelp=not any(a in FULL_HELP for a in options), writeto_stdout=True, exitcode=0)
    try:
      return parse(argv)
    except flags.Error as e:
      fail(e, USAGE_EXIT, hint)

  def main_with_errors(argv):
    try:
      return main(argv)
    except app.UsageError as e:
      fail(e, USAGE_EXIT, hint)
    except USER_ERRORS as e:
      fail(e, USER_EXIT)

  app.run(main_with_errors, flags_parser=parse_or_help)
