"""Models, one file per family; importing this package registers them."""

from rankstream.models import (  # noqa: F401  (registration)
    cascade,
    dcn,
    deepfm,
    dfgr,
    dien,
    din,
    hstu,
    hstu_rank,
    lares,
    lr,
    plr,
    reader,
    sasrec,
    tesla,
)
