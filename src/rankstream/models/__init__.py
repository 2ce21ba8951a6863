"""Models, one file per family; importing this package registers them."""

from rankstream.models import cascade, hstu, reader, sasrec, tesla  # noqa: F401  (registration)
