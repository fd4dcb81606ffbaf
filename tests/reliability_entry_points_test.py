"""Every entry point answers a bad input with `error:` lines naming the thing, no traceback, and
the exit status of the convention (1: user error, 2: usage error); the cases are benchmarks/faults.py's
`BAD_INPUTS`, the rows of BUILD.md's bad-input table. Also the runner's convention itself."""

import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks import faults  # noqa: E402  pylint: disable=wrong-import-position


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
  return faults.make_fixtures(tmp_path_factory.mktemp("bad_inputs"))


@pytest.mark.parametrize("case", faults.BAD_INPUTS, ids=lambda c: f"{c.script}: {c.what}")
def test_bad_input_is_one_error_line_without_traceback(fixtures, case):
  code, shown, out = faults.run_bad_input(case, fixtures)
  assert "Traceback" not in out, out[-3000:]
  assert code == case.exitcode, out[-3000:]
  assert shown and all(line.startswith("error: ") for line in shown), out[-3000:]
  assert re.search(case.expect, "\n".join(shown)), "\n".join(shown)


def test_bad_input_table_lists_every_case():
  text = (REPO / "BUILD.md").read_text()
  table = text.split(faults.BEGIN, 1)[1].split(faults.END, 1)[0]
  for case in faults.BAD_INPUTS:
    assert f"| `{case.script}` | {case.what} |" in table, f"rerun benchmarks/faults.py --n=0 --table=BUILD.md: {case}"


TOOL = textwrap.dedent('''
    import sys
    from absl import flags
    from facegen_jax import entry
    flags.DEFINE_string("kind", None, "what to raise")
    def main(argv):
      kind = flags.FLAGS.kind
      if kind == "value":
        raise ValueError("bad value of x\\nand of y")
      if kind == "missing":
        open("/nonexistent/file")
      if kind == "usage":
        from absl import app
        raise app.UsageError("no such mode")
      if kind == "bug":
        raise KeyError("internal")
      print("fine")
    entry.run(main)
    ''')


@pytest.mark.parametrize("kind,code,lines", [
    ("value", 1, ["error: bad value of x", "error: and of y"]),
    ("missing", 1, ["error: [Errno 2] No such file or directory: '/nonexistent/file'"]),
    ("usage", 2, ["error: no such mode (--help lists the flags)"]),
])
def test_runner_turns_user_and_usage_errors_into_error_lines(kind, code, lines):
  result = subprocess.run([sys.executable, "-c", TOOL, f"--kind={kind}"], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
  assert result.returncode == code and result.stderr.splitlines() == lines, result.stderr


def test_runner_keeps_the_traceback_of_internal_errors_and_parses_flags():
  bug = subprocess.run([sys.executable, "-c", TOOL, "--kind=bug"], capture_output=True, text=True, cwd=REPO, timeout=120)
  assert bug.returncode == 1 and "Traceback" in bug.stderr and "KeyError: 'internal'" in bug.stderr
  wrong = subprocess.run([sys.executable, "-c", TOOL, "--kindd=x"], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
  assert wrong.returncode == 2 and wrong.stderr.startswith("error: Unknown command line flag 'kindd'"), wrong.stderr
  fine = subprocess.run([sys.executable, "-c", TOOL], capture_output=True, text=True, cwd=REPO, timeout=120)
  assert fine.returncode == 0 and fine.stdout == "fine\n", fine.stderr
