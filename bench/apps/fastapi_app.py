"""A FastAPI route that validates a JSON body with pydantic and answers with a model."""

from fastapi import FastAPI
from pydantic import BaseModel


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


class Receipt(BaseModel):
    name: str
    total: float
    tag_count: int


app = FastAPI()


@app.post("/items")
async def create_item(item: Item) -> Receipt:
    return Receipt(name=item.name, total=round(item.price * 1.2, 2), tag_count=len(item.tags))
