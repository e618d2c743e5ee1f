"""--storage postgresql://… : parsing, options, and a description that never shows the password."""

import pytest

from opentasks.app import build_store
from opentasks.config import ConfigError, StorageUrl, mask_password
from opentasks.storage.postgres import PostgresStore


def test_postgresql_url_keeps_the_dsn_and_reads_the_pool_size() -> None:
    url = StorageUrl.parse("postgresql://ada:s3cret@db.example:6432/tasks?pool_size=25&sslmode=require")
    assert url.backend == "postgresql"
    assert url.dsn == "postgresql://ada:s3cret@db.example:6432/tasks?sslmode=require"  # pool_size is ours
    assert (url.pool_size, url.connect_timeout) == (25, 10.0)


def test_postgres_scheme_is_spelled_postgresql_and_defaults_apply() -> None:
    url = StorageUrl.parse("postgres://db/tasks")
    assert url.dsn == "postgresql://db/tasks"
    assert url.pool_size == 10
    assert StorageUrl.parse("postgresql://").dsn == "postgresql://"  # everything from PG* variables


def test_search_path_reaches_the_driver() -> None:
    url = StorageUrl.parse("postgresql://db/shared?search_path=opentasks&pool_size=2")
    assert url.dsn == "postgresql://db/shared?search_path=opentasks"


def test_unknown_options_are_named() -> None:
    with pytest.raises(ConfigError, match=r"unknown postgresql option\(s\): poolsize") as refused:
        StorageUrl.parse("postgresql://db/tasks?poolsize=5")
    assert "pool_size" in str(refused.value)  # the accepted ones are listed


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://db/tasks?pool_size=0",
        "postgresql://db/tasks?pool_size=many",
        "postgresql://db/tasks?pool_size=1.5",
        "postgresql://db/tasks?connect_timeout=-1",
        "postgresql://db:port/tasks",
    ],
)
def test_bad_values_are_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="--storage"):
        StorageUrl.parse(url)


def test_describe_masks_the_password() -> None:
    url = StorageUrl.parse("postgresql://ada:s3cret@db:5432/tasks?pool_size=3")
    assert url.describe() == "postgresql://ada:***@db:5432/tasks (pool_size=3)"
    assert "s3cret" not in repr(url)
    in_query = StorageUrl.parse("postgresql://db/tasks?user=ada&password=s3cret")
    assert "s3cret" not in in_query.describe()
    assert in_query.describe() == "postgresql://db/tasks?user=ada&password=*** (pool_size=10)"
    no_password = StorageUrl.parse("postgresql://ada@db/tasks")
    assert no_password.describe() == "postgresql://ada@db/tasks (pool_size=10)"


def test_mask_password_leaves_urls_without_one_alone() -> None:
    assert mask_password("postgresql://db/x") == "postgresql://db/x"
    assert mask_password("postgresql://") == "postgresql://"
    assert mask_password("postgresql://a:b:c@h/x") == "postgresql://a:***@h/x"


def test_other_urls_mention_postgresql_in_their_error() -> None:
    with pytest.raises(ConfigError, match="postgresql://"):
        StorageUrl.parse("mysql://x")


def test_build_store_makes_a_postgres_store() -> None:
    store = build_store(StorageUrl.parse("postgresql://postgres@127.0.0.1:5432/x?pool_size=2"))
    assert isinstance(store, PostgresStore)
