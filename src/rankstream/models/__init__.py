"""Models, one file per family; importing this package registers them."""

from rankstream.models import hstu, lares, plr, sasrec  # noqa: F401  (registration)
