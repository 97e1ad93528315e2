"""Redis adapter: the store that applies a batch's writes atomically with its offsets and
reads the raw figures, its Lua scripts, the periodic scan and sweep, and the Redis
formats built by the worker. Importing the package imports no Redis client."""
