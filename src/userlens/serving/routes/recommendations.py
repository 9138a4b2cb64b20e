"""Recommendations for a stored user or an ad-hoc history, ranking, similar items.

These handlers run on the event loop (see ``userlens.serving.app`` for why): their work is
bounded, and the one step that is not (building a new filter's mask) goes to the thread pool.
"""


from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import StringConstraints
from starlette.concurrency import run_in_threadpool

from userlens.serving.deps import (
    AUTH_RESPONSES,
    PathId,
    UserPathId,
    invalid,
    path_id,
    require,
    service_of,
)
from userlens.serving.engine import Engine, Scored
from userlens.serving.schemas import (
    ErrorOut,
    HistoryIn,
    ModelInfo,
    RankIn,
    RankOut,
    Reason,
    RecommendationsOut,
    RecommendedItem,
    ScoredItem,
    SimilarOut,
)
from userlens.serving.service import InvalidFilter, UserHistory
from userlens.serving.settings import ServeSettings

FILTER_PATTERN = r"^[^:]+:[\s\S]+$"
FilterText = Annotated[str, StringConstraints(pattern=FILTER_PATTERN)]


def scored(items: list[Scored]) -> list[ScoredItem]:
    return [ScoredItem(item_id=s.item_id, score=s.score, source=s.source) for s in items]


def recommended(items: list[Scored]) -> list[RecommendedItem]:
    """Items whose ``because``/``interest`` stay unset, so the routes' ``exclude_unset``
    leaves them out unless ``explain`` set them."""
    return [RecommendedItem(item_id=s.item_id, score=s.score, source=s.source) for s in items]


async def explained(request: Request, history: UserHistory, items: list[Scored]
                    ) -> list[RecommendedItem]:
    """The items with ``because`` (the history events that drove each) and ``interest`` (the
    profile interest it serves), from the profile builder, off the event loop."""
    reasons = await run_in_threadpool(request.app.state.profiles.explain,
                                      history.items, history.weights, items)
    return [item.model_copy(update={
        "because": [Reason(item_id=i, weight=w) for i, w in because], "interest": interest})
        for item, (because, interest) in zip(recommended(items), reasons, strict=True)]


def model_info(engine: Engine) -> ModelInfo:
    return ModelInfo(name=engine.model.name, version=engine.version)


def build(settings: ServeSettings) -> APIRouter:
    router = APIRouter(tags=["recommendations"])
    k_query = Query(ge=1, le=settings.max_k, description="number of items")
    filter_query = Query(max_length=20,
                         description="field:value, repeatable, e.g. genre:Comedy")

    @router.get("/users/{user_id}/recommendations", response_model=RecommendationsOut,
                response_model_exclude_unset=True, dependencies=[require("read")],
                responses=AUTH_RESPONSES)
    async def user_recommendations(request: Request, user_id: UserPathId,
                             k: Annotated[int, k_query] = 10, exclude_seen: bool = True,
                             filter: Annotated[list[FilterText] | None, filter_query] = None,  # noqa: A002
                             explain: Annotated[bool, Query(description=(
                                 "add `because` (history events that drove each item) and "
                                 "`interest` (the profile interest it serves)"))] = False,
                             ) -> RecommendationsOut:
        """Recommendations from the user's stored history, including events just posted
        (with the event semantics the model was trained with) and with the user's steering
        controls (muted values and items never appear; boosts reorder)."""
        service = service_of(request)
        user_id = path_id(user_id, "user_id")
        engine = service.engine
        # one connection: an indexed read of at most max_history rows and the controls
        history = service.user_history(user_id)
        controls = history.controls
        try:
            where, allowed = await service.filter_mask(filter or [], controls)
        except InvalidFilter as error:
            raise invalid(("query", "filter"), str(error)) from error
        items, skipped, fallback = service.recommend(
            history.items, k, exclude_seen, where, allowed, weights=history.weights,
            seen=history.seen, controls=controls)
        out = await explained(request, history, items) if explain else recommended(items)
        return RecommendationsOut(user_id=user_id, items=out, fallback=fallback,
                                  history_length=len(history.items),
                                  unknown_items_skipped=skipped, model=model_info(engine))

    @router.post("/recommendations", response_model=RecommendationsOut,
                 response_model_exclude_unset=True)
    async def session_recommendations(body: HistoryIn, request: Request
                                      ) -> RecommendationsOut:
        """Recommendations for an ad-hoc history (an anonymous session), oldest first."""
        service = service_of(request)
        engine = service.engine
        history = body.history[-settings.max_history:]
        try:
            where, allowed = await service.filter_mask(body.filter)
        except InvalidFilter as error:
            raise invalid(("body", "filter"), str(error)) from error
        items, skipped, fallback = service.recommend(
            history, min(body.k, settings.max_k), body.exclude_seen, where, allowed)
        return RecommendationsOut(user_id=None, items=recommended(items), fallback=fallback,
                                  history_length=len(history), unknown_items_skipped=skipped,
                                  model=model_info(engine))

    @router.post("/users/{user_id}/rank", response_model=RankOut,
                 dependencies=[require("read")], responses=AUTH_RESPONSES)
    async def rank(user_id: UserPathId, body: RankIn, request: Request) -> RankOut:
        """Order candidate items for a user; items the model does not know go last."""
        service = service_of(request)
        user_id = path_id(user_id, "user_id")
        engine = service.engine
        history = service.user_history(user_id)
        items, _ = engine.rank(history.items, body.items, history.weights)
        return RankOut(user_id=user_id, items=scored(items), model=model_info(engine))

    @router.get("/items/{item_id}/similar", response_model=SimilarOut,
                responses={404: {"model": ErrorOut}}, tags=["items"])
    async def similar(item_id: PathId, request: Request,
                k: Annotated[int, k_query] = 10) -> SimilarOut:
        """Items the model recommends to someone who just interacted with this one."""
        service = service_of(request)
        item_id = path_id(item_id, "item_id")
        engine = service.engine
        if engine.items.index_of(item_id) is None:
            raise HTTPException(404, f"item_id {item_id!r} is not known to the model")
        return SimilarOut(item_id=item_id, items=scored(engine.similar(item_id, k)),
                          model=model_info(engine))

    return router
