"""Django's test runner, also writing every test's outcome to the JSON file named by
``DBPOOL_DJS_RESULT``, so run.py compares outcomes instead of scraping text output."""

from __future__ import annotations

import json
import os
import unittest
from typing import Any

from django.test.runner import DiscoverRunner


class RecordingResult(unittest.TextTestResult):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.passed_ids: list[str] = []

    def addSuccess(self, test: unittest.TestCase) -> None:
        super().addSuccess(test)
        self.passed_ids.append(test.id())


class RecordingRunner(DiscoverRunner):
    def get_resultclass(self) -> type[unittest.TextTestResult] | None:
        # --debug-sql and --pdb bring their own result classes; keep them.
        return super().get_resultclass() or RecordingResult

    def run_suite(self, suite: unittest.TestSuite, **kwargs: Any) -> unittest.TestResult:
        result = super().run_suite(suite, **kwargs)
        path = os.environ.get("DBPOOL_DJS_RESULT")
        if path:
            with open(path, "w", encoding="utf-8") as file:
                json.dump(outcomes(result), file, indent=1, sort_keys=True)
        return result


def outcomes(result: unittest.TestResult) -> dict[str, Any]:
    def ids(pairs: list[tuple[unittest.TestCase, str]]) -> dict[str, str]:
        return {test.id(): detail for test, detail in pairs}

    import django

    return {
        "django": {"version": django.__version__, "path": os.path.dirname(django.__file__)},
        "ran": result.testsRun,
        "passed": sorted(getattr(result, "passed_ids", [])),
        "failures": ids(result.failures),
        "errors": ids(result.errors),
        "skipped": ids(result.skipped),
        "expected_failures": ids(result.expectedFailures),
        "unexpected_successes": sorted(t.id() for t in result.unexpectedSuccesses),
    }
