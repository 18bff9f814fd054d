"""Configuration: pydantic models, the loader that builds a Plan, ``${VAR}`` secrets."""
