"""Models, one file per family; importing this package registers them."""

from rankstream.models import dcn, deepfm, dfgr, dien, din, hstu, hstu_rank, lr, sasrec  # noqa: F401  (registration)
