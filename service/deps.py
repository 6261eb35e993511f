"""Typed FastAPI dependencies: routes declare ``state: StateDep`` or
``settings: SettingsDep`` instead of reading ``request.app.state``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from .settings import Settings
from .state import ServiceState

__all__ = ["SettingsDep", "StateDep", "get_settings", "get_state"]


def get_state(request: Request) -> ServiceState:
    """The app's :class:`ServiceState` (set by :func:`service.app.create_app`)."""
    state: ServiceState = request.app.state.df
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


def get_settings(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]
