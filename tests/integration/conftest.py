from tests.stack_fixtures import _use_tiny_source  # noqa: F401
