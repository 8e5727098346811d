def test_import() -> None:
    """The package imports."""
    import auditlock  # noqa: F401
