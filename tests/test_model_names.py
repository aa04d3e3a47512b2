"""Registered-model names are checked once, before any work; no name can steer a registry search."""

import pytest

from lifecycle.state import read_state
from registry.lookup import versions_of
from registry.names import InvalidModelName, check_model_name

GOOD = ["tax-doc-classifier", "tax_doc.v2", "Tax Doc Classifier", "a" * 250]
BAD = [
    "",
    "   ",
    " lead",
    "trail ",
    "a/b",
    "a:b",
    "a@b",
    "o'brien",
    'say "hi"',
    "a`b",
    "back\\slash",
    "tax-doc-classifier' AND name='other",
    "tab\tname",
    "new\nline",
    "bell\x07",
    "a" * 251,
    "..",
]


@pytest.mark.parametrize("name", GOOD)
def test_good_names_pass(name):
    assert check_model_name(name, registry_uri="sqlite:///x.db") == name


@pytest.mark.parametrize("name", BAD)
def test_bad_names_are_refused_with_a_reason(name):
    with pytest.raises(InvalidModelName) as info:
        check_model_name(name, registry_uri="sqlite:///x.db")
    assert "\n" not in str(info.value).replace("\\n", "")


@pytest.mark.parametrize(
    "name,ok",
    [
        ("main.tax.classifier", True),
        ("main.tax_docs.clf-v2", True),
        ("classifier", False),
        ("main.classifier", False),
        ("a.b.c.d", False),
        ("main..clf", False),
        ("main.tax.my clf", False),
    ],
)
def test_unity_catalog_wants_three_levels(name, ok):
    if ok:
        assert check_model_name(name, registry_uri="databricks-uc") == name
    else:
        with pytest.raises(InvalidModelName, match="catalog.schema.model"):
            check_model_name(name, registry_uri="databricks-uc://profile")


def test_a_name_crafted_as_a_filter_reads_no_other_models_versions(mlflow_env, tmp_path):
    import mlflow

    client = mlflow.MlflowClient()
    for name in ("victim", "other"):
        client.create_registered_model(name)
        client.create_model_version(name, (tmp_path / name).as_uri())
    assert [v.name for v in versions_of(client, "victim")] == ["victim"]
    assert list(read_state(client, "victim").versions) == ["1"]
    with pytest.raises(InvalidModelName):
        versions_of(client, "victim' OR name='other")
