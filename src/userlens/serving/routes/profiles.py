"""A user's profile and their steering controls."""


from typing import Annotated, Literal

from fastapi import APIRouter, BackgroundTasks, HTTPException, Query, Request

from userlens.profiles.controls import ControlsPatch
from userlens.profiles.types import ControlsOut, Profile
from userlens.serving.deps import AUTH_RESPONSES, UserPathId, invalid, path_id, require
from userlens.serving.profiles import Profiles, UnknownUser
from userlens.serving.schemas import ErrorOut

router = APIRouter(tags=["profiles"])


def profiles_of(request: Request) -> Profiles:
    return request.app.state.profiles


@router.get("/users/{user_id}/profile", response_model=Profile,
            dependencies=[require("read")],
            responses={**AUTH_RESPONSES, 404: {"model": ErrorOut,
                                               "description": "nothing stored for the user"}})
def profile(user_id: UserPathId, request: Request, background: BackgroundTasks,
            summary: Annotated[Literal["template", "llm"], Query(
                description="llm: a language model writes the summary, checked for "
                            "faithfulness, generated in the background and cached per "
                            "profile version; until then the template is returned with "
                            "summary.pending = true")] = "template") -> Profile:
    """Who the user is, from their stored events: interests with evidence and lift,
    interest clusters, behaviour, a summary and the controls in force."""
    profiles = profiles_of(request)
    user_id = path_id(user_id, "user_id")
    try:
        found = profiles.profile(user_id)
    except UnknownUser:
        raise HTTPException(404, f"no events or controls stored for user {user_id!r}") from None
    if summary == "llm":
        cached = profiles.cached_summary(found)
        if cached is not None:
            return found.model_copy(update={"summary": cached})
        if profiles.claim(found):
            background.add_task(profiles.generate_summary, found)
        return found.model_copy(update={"summary": found.summary.model_copy(
            update={"pending": True})})
    return found


@router.patch("/users/{user_id}/profile/controls", response_model=ControlsOut,
              dependencies=[require("write")], responses=AUTH_RESPONSES)
def update_controls(user_id: UserPathId, body: ControlsPatch, request: Request
                    ) -> ControlsOut:
    """Steer the user's recommendations (JSON merge-patch): ``mute`` replaces the muted
    list (``FIELD:VALUE`` or ``item:ID``), ``boost`` merges factors in (0, 10] per
    ``FIELD:VALUE`` (null removes one), ``forget`` deletes every stored event of the user on
    the given ``item:ID``s now. Applies at once to every recommendation path."""
    user_id = path_id(user_id, "user_id")
    try:
        return profiles_of(request).update_controls(user_id, body).out()
    except ValueError as error:
        raise invalid(("body",), str(error)) from error
