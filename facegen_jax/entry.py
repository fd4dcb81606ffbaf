"""`run(main)`: `absl.app.run` for every facegen-jax command-line tool, with a `--help` that lists
the tool's own flags and exits 0.

absl's `--help` lists only the main module's flags and exits 1; a tool whose flags live in an
imported module (`facegen-reenact`: facegen_jax/inference/cli.py) names that module in
`flag_modules`. This module imports nothing of facegen_jax (the bottom layer).
"""

import sys
from typing import Callable, Optional, Sequence

from absl import app, flags

SHORT_HELP = ("--help", "-help", "--helpshort", "-helpshort", "-?", "-h")
FULL_HELP = ("--helpfull", "-helpfull")


def run(main: Callable, flag_modules: Sequence[str] = (), flags_parser: Optional[Callable] = None):
  """`app.run(main, flags_parser)`, after making the flags of `flag_modules` part of `--help`.

  `--help` prints the main module's docstring and the tool's flags to stdout and exits 0
  (`--helpfull`: every flag, absl's included).
  """
  for module in flag_modules:
    for flag in flags.FLAGS.get_flags_for_module(module):
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  parse = flags_parser or app.parse_flags_with_usage

  def parse_or_help(argv):
    options = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    if any(a in SHORT_HELP or a in FULL_HELP for a in options):
      app.usage(shorthelp=not any(a in FULL_HELP for a in options), writeto_stdout=True, exitcode=0)
    return parse(argv)

  app.run(main, flags_parser=parse_or_help)
