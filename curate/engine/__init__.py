"""The rule engine: rule base classes and registry, selection, runner, baselines, reports."""
