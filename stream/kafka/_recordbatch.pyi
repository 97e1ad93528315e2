"""Types of the optional compiled record-batch reader (stream/_recordbatch.c)."""

def read(
    data: bytes,
    pos: int,
    next_offset: int,
    max_records: int,
    check_crcs: bool,
    values: list[bytes | None],
    offsets: list[int],
) -> tuple[int, int, int]: ...
