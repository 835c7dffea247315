"""The check every packing family's test makes: a packed sample's logits are each document's own."""

from __future__ import annotations

from collections.abc import Callable

import torch

# two samples of the same three documents: in order, and reordered (so each is cut at other places)
ORDERS = ((0, 1, 2), (2, 0, 1))


def packed_rows(docs: list[torch.Tensor]) -> torch.Tensor:
    """[2, total] token ids: the documents packed in each of ORDERS."""
    return torch.stack([torch.cat([docs[i] for i in order]) for order in ORDERS])


def assert_each_document_alone(got: torch.Tensor, docs: list[torch.Tensor], alone: Callable[[torch.Tensor], torch.Tensor],
                               tolerance: float) -> None:
    """``got`` (the logits of packed_rows(docs)) equals, document by document, ``alone(document[None])[0]``."""
    for row, order in enumerate(ORDERS):
        start = 0
        for index in order:
            torch.testing.assert_close(got[row, start : start + len(docs[index])], alone(docs[index][None])[0],
                                       rtol=tolerance, atol=tolerance)
            start += len(docs[index])
