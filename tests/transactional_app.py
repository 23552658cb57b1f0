"""A FastAPI + SQLAlchemy app that publishes through the transactional outbox, for
tests/test_transactional_app.py. Configured by the environment: ``APP_DATABASE`` (a
PostgreSQL URL), ``APP_ENGINE`` (the livehub engine URL), ``APP_TABLE`` (its tables' prefix).

``POST /orders`` stores an order and publishes it to ``orders:new`` in one transaction;
with ``"fail": true`` the route fails after publishing, and the transaction rolls back.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from livehub import Hub, Settings
from livehub.models import Credentials
from livehub.protocol.codes import Error

DATABASE = os.environ["APP_DATABASE"]
TABLE = os.environ["APP_TABLE"]
ORDERS = {
    "name": "orders",
    "history_size": 100,
    "history_ttl": "600s",
    "force_recovery": True,
    "allow_subscribe_for_client": True,
}

database = create_async_engine(DATABASE.replace("postgresql://", "postgresql+asyncpg://"))
sessions = async_sessionmaker(database, expire_on_commit=False)
hub = Hub(Settings(channel={"namespaces": [ORDERS]}), engine=os.environ["APP_ENGINE"])
outbox = hub.transactional_outbox(DATABASE, table=f"{TABLE}_outbox", poll_interval=0.2)
app = FastAPI(title="orders")
app.include_router(hub.router)


async def by_header(scope: dict[str, Any]) -> Credentials | Error:
    user = dict(scope["headers"]).get(b"x-user", b"").decode()
    return Credentials(user) if user else Error(101, "unauthorized")


hub.node.connect_hook = by_header


async def session() -> AsyncIterator[AsyncSession]:
    async with sessions() as s:
        yield s


class Order(BaseModel):
    item: str
    fail: bool = False


@app.post("/orders")
async def create_order(order: Order, db: Annotated[AsyncSession, Depends(session)]) -> dict[str, int]:
    order_id = (
        await db.execute(
            text(f"INSERT INTO {TABLE}_orders (item) VALUES (:item) RETURNING id"), {"item": order.item}
        )
    ).scalar_one()
    await outbox.publish(db, "orders:new", {"id": order_id, "item": order.item})
    if order.fail:
        await db.rollback()
        raise HTTPException(409, "refused after publishing: rolled back")
    await db.commit()
    return {"id": order_id}
