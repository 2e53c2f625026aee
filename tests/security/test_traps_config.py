"""``PersistenceConfig`` refuses options it does not have (issue 18, small traps).

Before: ``PersistenceConfig(pool_max_sise=99)`` was accepted and ignored
(``extra="ignore"``), leaving the pool at its default of 10. Unknown keyword
arguments are now refused, each named with its closest option; unknown
``HAIVE_*`` variables stay ignored, since other parts read the same prefix.
"""

from __future__ import annotations

import pytest

from haive_langgraph.db import PersistenceConfig
from haive_langgraph.errors import ConfigurationError


def test_a_misspelt_option_is_refused_with_its_closest_match() -> None:
    with pytest.raises(ConfigurationError) as caught:
        PersistenceConfig(pool_max_sise=99)  # type: ignore[call-arg]
    message = str(caught.value)
    assert "no option 'pool_max_sise' (did you mean 'pool_max_size'?)" in message
    with pytest.raises(ConfigurationError, match=r"'schema' \(did you mean 'schema_name'\?\)"):
        PersistenceConfig(schema="app")  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="no options 'colour', 'flavour'"):
        PersistenceConfig(colour=1, flavour=2)  # type: ignore[call-arg]


def test_the_refused_value_is_never_shown() -> None:
    dsn = "postgresql://app:s3cret-pass@db.example/app"
    with pytest.raises(ConfigurationError) as caught:
        PersistenceConfig(databse_url=dsn)  # type: ignore[call-arg]
    assert "'databse_url' (did you mean 'database_url'?)" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_known_options_and_aliases_still_work(monkeypatch: pytest.MonkeyPatch) -> None:
    config = PersistenceConfig(pool_max_size=99, pool_min_size=2)
    assert (config.pool_max_size, config.pool_min_size) == (99, 2)
    assert PersistenceConfig(DATABASE_URL="postgresql://h/db").database_url == "postgresql://h/db"  # type: ignore[call-arg]
    assert PersistenceConfig(HAIVE_SCHEMA="app").schema_name == "app"  # type: ignore[call-arg]
    assert PersistenceConfig(_env_file=None).schema_name == "haive"  # pydantic-settings' own


def test_unknown_environment_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAIVE_POOL_MAX_SISE", "99")  # a typo in the environment: not ours to police
    monkeypatch.setenv("HAIVE_CACHE_SECRET", "read by the cache layer")
    monkeypatch.setenv("HAIVE_POOL_MAX_SIZE", "7")
    assert PersistenceConfig().pool_max_size == 7
