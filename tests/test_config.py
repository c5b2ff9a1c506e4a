"""Config discovery, CLI overrides, selection and config errors."""

from __future__ import annotations

import pytest

from curate.config import ConfigError, find_config
from curate.engine.settings import LintRequest, plan_lint
from tests.conftest import write_jsonl

ROW = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello"}]}


def codes(plan) -> list[str]:
    return [rule.code for rule in plan.rules]


@pytest.fixture
def project(tmp_path):
    (tmp_path / "data" / "nested").mkdir(parents=True)
    data = write_jsonl(tmp_path / "data" / "nested" / "train.jsonl", [ROW])
    return tmp_path, data


def test_pyproject_found_by_walking_up(project):
    root, data = project
    (root / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.curate]\nselect = ["SC001", "SC002"]\n')
    assert find_config(data) == root / "pyproject.toml"
    assert codes(plan_lint(LintRequest(paths=[str(data)]))) == ["SC001", "SC002"]


def test_pyproject_without_curate_table_is_skipped_and_curate_toml_wins(project):
    root, data = project
    (root / "data" / "pyproject.toml").write_text('[project]\nname = "x"\n')
    (root / "curate.toml").write_text('select = ["SC005"]\n')
    assert find_config(data) == root / "curate.toml"
    assert codes(plan_lint(LintRequest(paths=[str(data)]))) == ["SC005"]


def test_isolated_ignores_config(project):
    root, data = project
    (root / "curate.toml").write_text('select = ["SC005"]\n')
    assert "SC001" in codes(plan_lint(LintRequest(paths=[str(data)], isolated=True)))


def test_cli_select_replaces_config_select_and_ignores_add_up(project):
    root, data = project
    (root / "curate.toml").write_text('select = ["SC005"]\nignore = ["SC008"]\n')
    plan = plan_lint(LintRequest(paths=[str(data)], select=["SC001", "SC008", "SC002"], ignore=["SC002"]))
    assert codes(plan) == ["SC001"]


def test_most_specific_selector_wins():
    data_free = LintRequest(paths=[], isolated=True, select=["SC"], ignore=["SC00"], extend_select=["SC004"])
    assert codes(plan_lint(data_free)) == ["SC004", "SC010"]
    by_name = LintRequest(paths=[], isolated=True, select=["SC"], ignore=["role-order", "unexpected-key"])
    assert "SC007" not in codes(plan_lint(by_name)) and "SC008" not in codes(plan_lint(by_name))
    assert "SC006" in codes(plan_lint(by_name))


def test_rule_options_by_code_or_name_and_cli_set_wins(project):
    root, data = project
    (root / "curate.toml").write_text('[rules.unexpected-key]\nallowed = ["ticket"]\n\n[rules.SC004]\nextra-roles = ["critic"]\n')
    plan = plan_lint(LintRequest(paths=[str(data)], rule_options={"SC008": {"allowed": ["order"]}}))
    options = {rule.code: rule.options for rule in plan.rules}
    assert options["SC008"].allowed == ["order"]
    assert options["SC004"].extra_roles == ["critic"]


def test_every_config_problem_is_reported_at_once_with_suggestions(project):
    root, data = project
    (root / "curate.toml").write_text(
        'selct = ["SC"]\nfail-on = "sometimes"\nignore = ["SC999"]\n'
        '[rules.SC004]\nextra_rols = ["x"]\n[rules.near-duplicat]\nthreshold = 0.9\n'
    )
    with pytest.raises(ConfigError) as info:
        plan_lint(LintRequest(paths=[str(data)]))
    problems = "\n".join(info.value.problems)
    assert "unknown key `selct` (did you mean `select`?)" in problems
    assert "fail-on" in problems
    with pytest.raises(ConfigError) as info:
        (root / "curate.toml").write_text('ignore = ["SC999"]\n[rules.SC004]\nextra_rols = ["x"]\n[rules.role-ordr]\nx = 1\n')
        plan_lint(LintRequest(paths=[str(data)]))
    problems = info.value.problems
    assert any("SC999" in p for p in problems)
    assert any("extra_rols" in p and "did you mean `extra_roles`" in p and "SC004" in p for p in problems)
    assert any("role-ordr" in p and "did you mean `role-order`" in p for p in problems)
    assert len(problems) == 3


def test_option_value_errors_name_rule_and_field(project):
    root, data = project
    (root / "curate.toml").write_text('[rules.SC004]\nextra-roles = "critic"\n')
    with pytest.raises(ConfigError) as info:
        plan_lint(LintRequest(paths=[str(data)]))
    assert "SC004" in info.value.problems[0] and "`extra-roles`: Input should be a valid list" in info.value.problems[0]


def test_invalid_toml_is_a_one_line_error(project):
    root, data = project
    (root / "curate.toml").write_text("select = [\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        plan_lint(LintRequest(paths=[str(data)]))


def test_config_paths_are_relative_to_the_config_file(project):
    root, data = project
    (root / "curate.toml").write_text('eval = ["evals/test.jsonl"]\nmodel = "org/some-model"\n')
    plan = plan_lint(LintRequest(paths=[str(data)]))
    assert plan.context.eval_paths == [str(root / "evals" / "test.jsonl")]
    assert plan.context.model == "org/some-model"  # a hub name stays a name


def test_train_table_is_accepted_for_the_trainer(project):
    root, data = project
    (root / "pyproject.toml").write_text('[tool.curate]\nselect = ["SC"]\n[tool.curate.train]\nlearning-rate = 1e-4\n')
    plan = plan_lint(LintRequest(paths=[str(data)]))
    assert plan.config.train == {"learning-rate": 1e-4}
