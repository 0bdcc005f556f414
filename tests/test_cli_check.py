"""`fluidllm check`: the proofs_checks table from the CLI."""
import json

from fluidllm.cli import main


def test_check_runs_named_checks_and_reports_json(capsys) -> None:
    assert main(["check", "check_staircase_rate_bound", "check_fig8_worked_example"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "2 passed, 0 failed, 0 pending" in out
    assert main(["check", "--json", "check_work_conserving_classification"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["passed"] == 1 and d["failed"] == 0 and d["checks"][0]["method"].startswith("exhaustive")
