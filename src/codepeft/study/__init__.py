"""Studies: a models x methods x datasets grid run resumably into one results store."""

from codepeft.study.config import StudyConfig, load_study
from codepeft.study.runner import prepare, run_study
from codepeft.study.store import Store, open_store

__all__ = ["Store", "StudyConfig", "load_study", "open_store", "prepare", "run_study"]
