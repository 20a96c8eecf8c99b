"""The study report: reads the results store only."""

from codepeft.report.build import write_report

__all__ = ["write_report"]
